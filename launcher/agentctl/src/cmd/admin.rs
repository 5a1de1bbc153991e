//! `agentctl admin user|token`: the dashboard's accounts, in the session
//! store. Whoever may write the store may run these (its file's mode, or
//! the database role in a Postgres URL); each change is written to the
//! accounts' audit trail with the Unix user who made it.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, Result, bail};
use lifecycle::Lifecycle;
use serde_json::json;
use store::{Role, SessionStore};

use crate::cli::{AdminCommand, TokenCommand, UserCommand};
use store::utc as when;

pub fn admin(cmd: AdminCommand, lc: &Lifecycle) -> Result<u8> {
    // The password is read before the store opens, so that nothing waits
    // on a database while someone types.
    let password = match &cmd {
        AdminCommand::User(UserCommand::Add { password_stdin, .. })
        | AdminCommand::User(UserCommand::Passwd { password_stdin, .. }) => {
            Some(read_password(*password_stdin)?)
        }
        _ => None,
    };
    let hash = match password {
        Some(p) => Some(web::auth::hash_password(&p).context("the password")?),
        None => None,
    };
    let actor = format!("{} (agentctl admin)", lc.actor);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?;
    rt.block_on(async {
        let store = lc.store.open().await?;
        let out = run(cmd, &store, &actor, hash).await;
        store.close().await;
        out
    })
}

async fn run(
    cmd: AdminCommand,
    store: &SessionStore,
    actor: &str,
    hash: Option<String>,
) -> Result<u8> {
    let now = store::now_ms();
    let hash = || hash.clone().context("no password was read");
    match cmd {
        AdminCommand::User(UserCommand::Add { name, role, .. }) => {
            let role: Role = role.parse().context("--role")?;
            store.add_user(&name, role, &hash()?, now).await?;
            trail(
                store,
                actor,
                "user_added",
                &name,
                json!({"role": role}),
                now,
            )
            .await;
            eprintln!("agentctl: user {name} added ({role})");
        }
        AdminCommand::User(UserCommand::Passwd { name, .. }) => {
            store.set_password(&name, &hash()?, now).await?;
            trail(
                store,
                actor,
                "user_changed",
                &name,
                json!({"password": "changed"}),
                now,
            )
            .await;
            eprintln!("agentctl: password of {name} changed; their browser logins ended");
        }
        AdminCommand::User(UserCommand::Role { name, role }) => {
            let role: Role = role.parse().context("the role")?;
            store.set_role(&name, role, now).await?;
            trail(
                store,
                actor,
                "user_changed",
                &name,
                json!({"role": role}),
                now,
            )
            .await;
            eprintln!("agentctl: {name} is now {role}; their browser logins ended");
        }
        AdminCommand::User(UserCommand::Rm { name }) => {
            store.remove_user(&name).await?;
            trail(store, actor, "user_removed", &name, json!({}), now).await;
            eprintln!("agentctl: user {name} removed, with their tokens and logins");
        }
        AdminCommand::User(UserCommand::Ls { json }) => {
            let users = store.users().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                println!("{:<32}  {:<8}  CREATED", "USER", "ROLE");
                for u in users {
                    println!(
                        "{:<32}  {:<8}  {}",
                        u.name,
                        u.role.as_str(),
                        when(u.created_at)
                    );
                }
            }
        }
        AdminCommand::Token(TokenCommand::Create { user, label, scope }) => {
            let t = web::auth::new_token().context("cannot make a token")?;
            store
                .add_token(
                    &t.id,
                    &user,
                    &label,
                    scope,
                    &web::auth::sha256_hex(&t.token),
                    now,
                )
                .await?;
            trail(
                store,
                actor,
                "token_created",
                &t.id,
                json!({"user": user, "label": label, "scope": scope}),
                now,
            )
            .await;
            eprintln!(
                "agentctl: token {} for {user} (scope {scope}); it is shown only this once:",
                t.id
            );
            println!("{}", t.token);
        }
        AdminCommand::Token(TokenCommand::Revoke { id }) => {
            let t = store.revoke_token(&id, now).await?;
            trail(
                store,
                actor,
                "token_revoked",
                &id,
                json!({"user": t.user}),
                now,
            )
            .await;
            eprintln!("agentctl: token {id} of {} revoked", t.user);
        }
        AdminCommand::Token(TokenCommand::Ls { user, json }) => {
            let tokens = store.tokens(user.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                println!(
                    "{:<12}  {:<20}  {:<5}  {:<19}  {:<19}  {:<19}  LABEL",
                    "ID", "USER", "SCOPE", "CREATED", "LAST USED", "REVOKED"
                );
                for t in tokens {
                    println!(
                        "{:<12}  {:<20}  {:<5}  {:<19}  {:<19}  {:<19}  {}",
                        t.id,
                        t.user,
                        t.scope.as_str(),
                        when(t.created_at),
                        t.last_used_at.map(when).unwrap_or_else(|| "-".into()),
                        t.revoked_at.map(when).unwrap_or_else(|| "-".into()),
                        t.label
                    );
                }
            }
        }
    }
    Ok(0)
}

/// Writes to the accounts' trail; a failure is a warning (the change
/// itself is made), never silent.
pub(crate) async fn trail(
    store: &SessionStore,
    actor: &str,
    kind: &str,
    subject: &str,
    data: serde_json::Value,
    now: i64,
) {
    if let Err(e) = store
        .append_account_event(actor, kind, Some(subject), &data, now)
        .await
    {
        eprintln!(
            "agentctl: warning: the change was made but not written to the accounts' trail: {e}"
        );
    }
}

/// A password: asked twice on the terminal, or one line of stdin.
fn read_password(from_stdin: bool) -> Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "no terminal to ask for the password on; pass --password-stdin and write it to stdin"
        );
    }
    let first = rpassword::prompt_password("password: ").context("cannot read the password")?;
    let again = rpassword::prompt_password("again: ").context("cannot read the password")?;
    if first != again {
        bail!("the two passwords differ; nothing was changed");
    }
    Ok(first)
}
