-- Tokens that end and follow their user.
--
-- * `expires_at`: a token stops working then (null: never, for tokens minted before
--   expiry existed and service tokens an operator asks to keep).
-- * A token acts with the lower of its own role and its user's current role; that is
--   computed where the token is used (`store::users::token_use`), so nothing is stored
--   here for it.
-- * Owners list and revoke their own tokens by `user_id`.
alter table api_tokens add column expires_at timestamptz;
create index api_tokens_user on api_tokens (user_id) where user_id is not null;
