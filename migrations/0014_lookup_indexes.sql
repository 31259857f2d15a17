-- `GET /v1/memberships/lookup` at a million memberships: each selector reads an index instead of
-- every membership of the merchant. Partial where the column is often empty; the handle is
-- indexed as the lookup compares it (lower-cased, without its `@`).
CREATE INDEX memberships_by_wallet ON memberships (merchant_id, wallet) WHERE wallet IS NOT NULL;
CREATE INDEX memberships_by_telegram_user ON memberships (merchant_id, telegram_user_id) WHERE telegram_user_id IS NOT NULL;
CREATE INDEX memberships_by_discord_user ON memberships (merchant_id, discord_user_id) WHERE discord_user_id IS NOT NULL;
CREATE INDEX memberships_by_handle ON memberships (merchant_id, LOWER(LTRIM(COALESCE(handle, ''), '@')));
