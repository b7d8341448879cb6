//! `register`, `login` and `logout`: creating, storing and ending the session.
//!
//! The password comes from [`crate::password`] and goes straight into the client's
//! configuration; it must never be printed or logged here.

use super::{Context, print_out};
use crate::cli::AccountArgs;
use crate::password;
use confide_client::{Auth, ClientError};

/// `confide register --user NAME`.
///
/// # Errors
/// If the password cannot be read or the server refuses (for example `username taken`
/// or `weak password`).
pub async fn register(context: &Context, args: AccountArgs) -> anyhow::Result<()> {
    start_session(context, args, true).await
}

/// `confide login --user NAME`.
///
/// # Errors
/// If the password cannot be read or the server refuses (`invalid credentials`,
/// `rate limited`).
pub async fn login(context: &Context, args: AccountArgs) -> anyhow::Result<()> {
    start_session(context, args, false).await
}

/// Registers (asking for the password twice) or logs in, and stores the session.
async fn start_session(context: &Context, args: AccountArgs, register: bool) -> anyhow::Result<()> {
    let server = context.login_server()?;
    let password = password::obtain(&args.user, register)?;
    let username = args.user;
    let auth = if register {
        Auth::Register { username, password }
    } else {
        Auth::Login { username, password }
    };
    let (client, _events) = context.connect_as(server.clone(), auth, false).await?;
    let username = client.user().username.clone();
    // The client publishes this device's identity and KeyPackages as it starts, so
    // that others can add it to encrypted rooms and verify it; wait for that before
    // closing, or the device would stay unknown to others.
    let published = client.keys_published().await;
    client.close().await;
    published?;
    print_out(format!("logged in as {username} on {server}"))?;
    Ok(())
}

/// `confide logout`: ends the session on the server and deletes it from the profile.
/// A session the server no longer knows is simply forgotten.
///
/// # Errors
/// If not logged in or the server is unreachable.
pub async fn logout(context: &Context) -> anyhow::Result<()> {
    match context.connect(false).await {
        Ok((client, _events)) => client.logout().await?,
        Err(ClientError::SessionExpired) => {
            context.profile.remove_session()?;
        }
        Err(err) => return Err(err.into()),
    }
    print_out("logged out".to_owned())?;
    Ok(())
}
