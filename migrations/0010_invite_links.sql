-- The invite link an attempt handed out (Telegram) and when it was revoked: support and the
-- dashboard see which link is live, and the next attempt or the end of access revokes it.
ALTER TABLE delivery_attempts ADD COLUMN invite_link TEXT;
ALTER TABLE delivery_attempts ADD COLUMN invite_link_revoked_at BIGINT;
