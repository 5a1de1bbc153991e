//! Dashboard accounts: users, API tokens, browser logins, and the trail of
//! what was done to them (migration 0004).
//!
//! The store keeps only what it is given: an Argon2id hash (never a
//! password), the sha256 of a token's or a login's secret (never the
//! secret). Hashing and checking are the web crate's.

use tracing::debug;

use super::{Pool, SessionStore};
use crate::StoreError;
use crate::types::{AccountEvent, Role, Scope, Token, User};

/// A user name: what Unix allows for a login name, so that a dashboard
/// user can be the Unix user whose sessions they see.
pub fn check_user_name(name: &str) -> Result<(), StoreError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
    if first_ok && rest_ok && name.len() <= 32 {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "user name",
            name,
            "use 1 to 32 of a-z, 0-9, '_', '-' and '.', starting with a letter or '_'",
        ))
    }
}

fn check_sha256(what: &'static str, hex: &str) -> Result<(), StoreError> {
    if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(StoreError::invalid(
            what,
            "(hidden)",
            "64 lowercase hex digits",
        ))
    }
}

crate::row_struct! {
    struct UserRow {
        name: String,
        role: String,
        created_at: i64,
        changed_at: i64,
    }
}

impl UserRow {
    fn into_user(self) -> Result<User, StoreError> {
        let role = self.role.parse().map_err(|_| StoreError::Corrupt {
            id: format!("(user {})", self.name),
            field: "role",
            reason: format!("\"{}\" is no role", self.role),
        })?;
        Ok(User {
            name: self.name,
            role,
            created_at: self.created_at,
            changed_at: self.changed_at,
        })
    }
}

crate::row_struct! {
    struct TokenRow {
        id: String,
        user_name: String,
        label: String,
        scope: String,
        created_at: i64,
        last_used_at: Option<i64>,
        revoked_at: Option<i64>,
    }
}

impl From<TokenRow> for Token {
    fn from(r: TokenRow) -> Token {
        Token {
            id: r.id,
            user: r.user_name,
            label: r.label,
            // The column's CHECK allows only the three; anything else
            // (a hand edit) is read as the narrowest.
            scope: r.scope.parse().unwrap_or(Scope::Read),
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// A user's name, role, created and changed; the token's id, label,
/// created and last use.
type TokenUserRow = (
    String,
    String,
    i64,
    i64,
    String,
    String,
    String,
    i64,
    Option<i64>,
);

const USER_COLUMNS: &str = "name, role, created_at, changed_at";
const TOKEN_COLUMNS: &str = "id, user_name, label, scope, created_at, last_used_at, revoked_at";

/// A token's last use is written at most this often (ms), so that reading
/// with a token is not a write every time.
const LAST_USED_GRANULARITY: i64 = 60_000;

impl SessionStore {
    /// Whether any user exists: a dashboard with users requires a login.
    pub async fn has_users(&self) -> Result<bool, StoreError> {
        let n: i64 = dispatch!(&self.pool, |p| {
            sqlx::query_scalar("SELECT COUNT(*) FROM (SELECT 1 FROM users LIMIT 1) u")
                .fetch_one(p)
                .await?
        });
        Ok(n > 0)
    }

    /// Adds user `name`; refuses a name that exists.
    pub async fn add_user(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
        now: i64,
    ) -> Result<User, StoreError> {
        check_user_name(name)?;
        let _serial = self.serialize_writers().await;
        let r = dispatch!(&self.pool, |p| {
            sqlx::query(
                "INSERT INTO users (name, role, password, created_at, changed_at) \
                 VALUES ($1, $2, $3, $4, $4)",
            )
            .bind(name)
            .bind(role.as_str())
            .bind(password_hash)
            .bind(now)
            .execute(p)
            .await
            .map(|_| ())
        });
        match r {
            Ok(_) => {}
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                return Err(StoreError::UserExists { name: name.into() });
            }
            Err(e) => return Err(e.into()),
        }
        debug!(user = %name, role = role.as_str(), "user added");
        Ok(User {
            name: name.into(),
            role,
            created_at: now,
            changed_at: now,
        })
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY name");
        let rows: Vec<UserRow> =
            dispatch!(&self.pool, |p| sqlx::query_as(&sql).fetch_all(p).await?);
        rows.into_iter().map(UserRow::into_user).collect()
    }

    /// User `name` and their password hash, or `None`.
    pub async fn user_with_password(
        &self,
        name: &str,
    ) -> Result<Option<(User, String)>, StoreError> {
        if check_user_name(name).is_err() {
            return Ok(None);
        }
        let sql = format!("SELECT {USER_COLUMNS}, password FROM users WHERE name = $1");
        let row: Option<(String, String, i64, i64, String)> = dispatch!(&self.pool, |p| {
            sqlx::query_as(&sql).bind(name).fetch_optional(p).await?
        });
        row.map(|(name, role, created_at, changed_at, password)| {
            let user = UserRow {
                name,
                role,
                created_at,
                changed_at,
            }
            .into_user()?;
            Ok((user, password))
        })
        .transpose()
    }

    /// Changes user `name`'s password hash and ends their browser logins.
    pub async fn set_password(
        &self,
        name: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.change_user(
            name,
            "UPDATE users SET password = $2, changed_at = $3 WHERE name = $1",
            password_hash,
            now,
        )
        .await
    }

    /// Changes user `name`'s role and ends their browser logins (a login
    /// made under the old role must not keep it).
    pub async fn set_role(&self, name: &str, role: Role, now: i64) -> Result<(), StoreError> {
        self.change_user(
            name,
            "UPDATE users SET role = $2, changed_at = $3 WHERE name = $1",
            role.as_str(),
            now,
        )
        .await
    }

    async fn change_user(
        &self,
        name: &str,
        sql: &str,
        value: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        check_user_name(name)?;
        let _serial = self.serialize_writers().await;
        let n = dispatch!(&self.pool, |p| {
            let mut tx = p.begin_with(self.begin_write()).await?;
            let n = sqlx::query(sql)
                .bind(name)
                .bind(value)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM web_logins WHERE user_name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            n
        });
        if n == 0 {
            return Err(StoreError::NoSuchUser { name: name.into() });
        }
        Ok(())
    }

    /// Removes user `name` with their tokens and logins.
    pub async fn remove_user(&self, name: &str) -> Result<(), StoreError> {
        check_user_name(name)?;
        let _serial = self.serialize_writers().await;
        let n = dispatch!(&self.pool, |p| {
            let mut tx = p.begin_with(self.begin_write()).await?;
            for sql in [
                "DELETE FROM web_logins WHERE user_name = $1",
                "DELETE FROM api_tokens WHERE user_name = $1",
            ] {
                sqlx::query(sql).bind(name).execute(&mut *tx).await?;
            }
            let n = sqlx::query("DELETE FROM users WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            n
        });
        if n == 0 {
            return Err(StoreError::NoSuchUser { name: name.into() });
        }
        Ok(())
    }

    /// Records API token `id` of `user`; `secret_sha256` is the sha256 (hex)
    /// of its secret.
    pub async fn add_token(
        &self,
        id: &str,
        user: &str,
        label: &str,
        scope: Scope,
        secret_sha256: &str,
        now: i64,
    ) -> Result<Token, StoreError> {
        check_user_name(user)?;
        check_sha256("token hash", secret_sha256)?;
        let _serial = self.serialize_writers().await;
        let r = dispatch!(&self.pool, |p| {
            sqlx::query(
                "INSERT INTO api_tokens (id, user_name, label, secret_sha256, created_at, scope) \
                 SELECT $1, name, $3, $4, $5, $6 FROM users WHERE name = $2",
            )
            .bind(id)
            .bind(user)
            .bind(label)
            .bind(secret_sha256)
            .bind(now)
            .bind(scope.as_str())
            .execute(p)
            .await?
            .rows_affected()
        });
        if r == 0 {
            return Err(StoreError::NoSuchUser { name: user.into() });
        }
        Ok(Token {
            id: id.into(),
            user: user.into(),
            label: label.into(),
            scope,
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        })
    }

    /// Revokes token `id` (revoking twice is no error); returns it.
    pub async fn revoke_token(&self, id: &str, now: i64) -> Result<Token, StoreError> {
        let _serial = self.serialize_writers().await;
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1");
        let row: Option<TokenRow> = dispatch!(&self.pool, |p| {
            sqlx::query(
                "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(now)
            .execute(p)
            .await?;
            sqlx::query_as(&sql).bind(id).fetch_optional(p).await?
        });
        row.map(Token::from)
            .ok_or_else(|| StoreError::NoSuchToken { id: id.into() })
    }

    /// Tokens, of one user or of all, newest first.
    pub async fn tokens(&self, user: Option<&str>) -> Result<Vec<Token>, StoreError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens \
             WHERE (CAST($1 AS TEXT) IS NULL OR user_name = $1) ORDER BY created_at DESC, id"
        );
        let rows: Vec<TokenRow> = dispatch!(&self.pool, |p| {
            sqlx::query_as(&sql).bind(user).fetch_all(p).await?
        });
        Ok(rows.into_iter().map(Token::from).collect())
    }

    /// The user of the live (unrevoked) token whose secret hashes to
    /// `secret_sha256`, with the token; notes its use.
    pub async fn token_user(
        &self,
        secret_sha256: &str,
        now: i64,
    ) -> Result<Option<(User, Token)>, StoreError> {
        if check_sha256("token hash", secret_sha256).is_err() {
            return Ok(None);
        }
        let row: Option<TokenUserRow> = dispatch!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT u.name, u.role, u.created_at, u.changed_at, \
                     t.id, t.label, t.scope, t.created_at, t.last_used_at \
                     FROM api_tokens t JOIN users u ON u.name = t.user_name \
                     WHERE t.secret_sha256 = $1 AND t.revoked_at IS NULL",
            )
            .bind(secret_sha256)
            .fetch_optional(p)
            .await?
        });
        let Some((name, role, created_at, changed_at, id, label, scope, t_created, last_used)) =
            row
        else {
            return Ok(None);
        };
        if last_used.is_none_or(|at| now - at >= LAST_USED_GRANULARITY) {
            let _serial = self.serialize_writers().await;
            dispatch!(&self.pool, |p| {
                sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
                    .bind(&id)
                    .bind(now)
                    .execute(p)
                    .await?
                    .rows_affected()
            });
        }
        let user = UserRow {
            name: name.clone(),
            role,
            created_at,
            changed_at,
        }
        .into_user()?;
        let token = Token {
            id,
            user: name,
            label,
            scope: scope.parse().unwrap_or(Scope::Read),
            created_at: t_created,
            last_used_at: Some(now),
            revoked_at: None,
        };
        Ok(Some((user, token)))
    }

    /// Records a browser login of `user` until `expires_at`; drops expired
    /// logins on the way.
    pub async fn add_login(
        &self,
        secret_sha256: &str,
        user: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        check_sha256("login hash", secret_sha256)?;
        let _serial = self.serialize_writers().await;
        let n = dispatch!(&self.pool, |p| {
            let mut tx = p.begin_with(self.begin_write()).await?;
            sqlx::query("DELETE FROM web_logins WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let n = sqlx::query(
                "INSERT INTO web_logins (secret_sha256, user_name, created_at, expires_at) \
                 SELECT $1, name, $3, $4 FROM users WHERE name = $2",
            )
            .bind(secret_sha256)
            .bind(user)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            n
        });
        if n == 0 {
            return Err(StoreError::NoSuchUser { name: user.into() });
        }
        Ok(())
    }

    /// The user of the unexpired login whose secret hashes to
    /// `secret_sha256`.
    pub async fn login_user(
        &self,
        secret_sha256: &str,
        now: i64,
    ) -> Result<Option<User>, StoreError> {
        if check_sha256("login hash", secret_sha256).is_err() {
            return Ok(None);
        }
        let row: Option<UserRow> = dispatch!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT u.name, u.role, u.created_at, u.changed_at \
                 FROM web_logins l JOIN users u ON u.name = l.user_name \
                 WHERE l.secret_sha256 = $1 AND l.expires_at > $2",
            )
            .bind(secret_sha256)
            .bind(now)
            .fetch_optional(p)
            .await?
        });
        row.map(UserRow::into_user).transpose()
    }

    /// Ends the login whose secret hashes to `secret_sha256` (logout).
    pub async fn remove_login(&self, secret_sha256: &str) -> Result<(), StoreError> {
        if check_sha256("login hash", secret_sha256).is_err() {
            return Ok(());
        }
        let _serial = self.serialize_writers().await;
        dispatch!(&self.pool, |p| {
            sqlx::query("DELETE FROM web_logins WHERE secret_sha256 = $1")
                .bind(secret_sha256)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// Appends to the accounts' audit trail. `data` is JSON and must hold
    /// no secret.
    pub async fn append_account_event(
        &self,
        actor: &str,
        kind: &str,
        subject: Option<&str>,
        data: &serde_json::Value,
        now: i64,
    ) -> Result<(), StoreError> {
        let _serial = self.serialize_writers().await;
        let data = data.to_string();
        dispatch!(&self.pool, |p| {
            sqlx::query(
                "INSERT INTO account_events (at, actor, kind, subject, data) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(now)
            .bind(actor)
            .bind(kind)
            .bind(subject)
            .bind(&data)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// The accounts' audit trail, newest first, at most `limit` entries.
    pub async fn account_events(&self, limit: u32) -> Result<Vec<AccountEvent>, StoreError> {
        let rows: Vec<(i64, i64, String, String, Option<String>, String)> =
            dispatch!(&self.pool, |p| {
                sqlx::query_as(
                    "SELECT id, at, actor, kind, subject, data FROM account_events \
                     ORDER BY at DESC, id DESC LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(p)
                .await?
            });
        Ok(rows
            .into_iter()
            .map(|(id, at, actor, kind, subject, data)| AccountEvent {
                id,
                at,
                actor,
                kind,
                subject,
                data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
            })
            .collect())
    }
}
