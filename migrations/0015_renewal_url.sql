-- The merchant's checkout page for renewing a product (`{membership_id}` and `{product_id}`
-- are filled in), carried by every renewal reminder.
ALTER TABLE products ADD COLUMN renewal_url TEXT;
