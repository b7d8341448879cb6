//! Getting the password: from `CONFIDE_PASSWORD` for scripts, else a prompt without
//! echo; and the same for a shared-key room's passphrase (`CONFIDE_ROOM_PASSPHRASE`).
//! Neither is ever taken from the command line, where other users of the machine could
//! see it. It must never print, log or keep them beyond returning them.

use anyhow::{Context as _, bail};
use confide_proto::{Password, RoomName, UserName};
use std::ffi::OsString;
use std::io::IsTerminal;
use zeroize::Zeroizing;

/// The environment variable scripts use to pass the password.
pub const PASSWORD_ENV: &str = "CONFIDE_PASSWORD";

/// The environment variable scripts use to pass a shared-key room's passphrase.
pub const ROOM_PASSPHRASE_ENV: &str = "CONFIDE_ROOM_PASSPHRASE";

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

/// The passphrase of the shared-key room `room`. With `confirm` (a new room), a prompt
/// asks twice, since a mistyped passphrase would lock everyone else out.
///
/// # Errors
/// If the variable is not valid UTF-8 or empty, if there is no terminal to prompt on,
/// if the passphrase is empty, or if the two entries differ.
pub fn room_passphrase(room: &RoomName, confirm: bool) -> anyhow::Result<Zeroizing<String>> {
    if let Some(value) = std::env::var_os(ROOM_PASSPHRASE_ENV) {
        return passphrase_from_env(value);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no passphrase: set {ROOM_PASSPHRASE_ENV} or run in a terminal to be prompted");
    }
    let passphrase = Zeroizing::new(
        rpassword::prompt_password(format!("passphrase for #{room}: "))
            .context("cannot read the passphrase")?,
    );
    if passphrase.is_empty() {
        bail!("the passphrase is empty");
    }
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password("repeat the passphrase: ")
                .context("cannot read the passphrase")?,
        );
        if again != passphrase {
            bail!("the passphrases do not match");
        }
    }
    Ok(passphrase)
}

/// The passphrase from the value of [`ROOM_PASSPHRASE_ENV`].
fn passphrase_from_env(value: OsString) -> anyhow::Result<Zeroizing<String>> {
    let passphrase = match value.into_string() {
        Ok(text) => Zeroizing::new(text),
        Err(_) => bail!("{ROOM_PASSPHRASE_ENV} is not valid UTF-8"),
    };
    if passphrase.is_empty() {
        bail!("{ROOM_PASSPHRASE_ENV} is empty");
    }
    Ok(passphrase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrase_from_the_environment() {
        assert_eq!(
            passphrase_from_env(OsString::from("correct horse"))
                .unwrap()
                .as_str(),
            "correct horse"
        );
        let err = passphrase_from_env(OsString::new()).unwrap_err();
        assert_eq!(err.to_string(), "CONFIDE_ROOM_PASSPHRASE is empty");
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            let err = passphrase_from_env(OsString::from_vec(vec![0xff])).unwrap_err();
            assert_eq!(
                err.to_string(),
                "CONFIDE_ROOM_PASSPHRASE is not valid UTF-8"
            );
        }
    }
}
