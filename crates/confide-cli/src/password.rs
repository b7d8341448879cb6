//! Getting the password: from `CONFIDE_PASSWORD` for scripts, else a prompt without
//! echo. It must never print, log or keep the password beyond returning it.

use anyhow::{Context as _, bail};
use confide_proto::{Password, UserName};
use std::io::IsTerminal;

/// The environment variable scripts use to pass the password.
pub const PASSWORD_ENV: &str = "CONFIDE_PASSWORD";

/// The password for `user`. With `confirm` (registration), a prompt asks twice.
///
/// # Errors
/// If the variable is not valid UTF-8, if there is no terminal to prompt on, or if the
/// two entries differ.
pub fn obtain(user: &UserName, confirm: bool) -> anyhow::Result<Password> {
    if let Some(value) = std::env::var_os(PASSWORD_ENV) {
        return match value.into_string() {
            Ok(text) => Ok(Password(text)),
            Err(_) => bail!("{PASSWORD_ENV} is not valid UTF-8"),
        };
    }
    if !std::io::stdin().is_terminal() {
        bail!("no password: set {PASSWORD_ENV} or run in a terminal to be prompted");
    }
    let password = Password(
        rpassword::prompt_password(format!("password for {user}: "))
            .context("cannot read the password")?,
    );
    if confirm {
        let again = Password(
            rpassword::prompt_password("repeat the password: ")
                .context("cannot read the password")?,
        );
        if again != password {
            bail!("the passwords do not match");
        }
    }
    Ok(password)
}
