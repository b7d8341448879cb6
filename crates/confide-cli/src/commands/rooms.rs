//! `rooms`, `users` and `room create|key|join|leave|invite|kick|ban|unban`.
//!
//! Thin wrappers over the client's room requests with one confirmation line each (or
//! JSON objects). They must not keep any state between runs; the keys of shared-key
//! rooms are kept by the client core, sealed in the profile. Key files and passphrases
//! are never printed.

use super::{Context, print_out};
use crate::cli::{KeySource, RoomCommand, UsersArgs};
use crate::output::{human, json, place_of};
use crate::password;
use anyhow::{Context as _, bail};
use confide_client::{ClientHandle, RoomKey};
use confide_crypto::shared_key::SharedKey;
use confide_proto::{Membership, RoomEncryption, RoomInfo, RoomName};
use std::path::Path;
use zeroize::Zeroizing;

/// `confide rooms`.
///
/// # Errors
/// If not logged in or the server refuses.
pub async fn rooms(context: &Context) -> anyhow::Result<()> {
    let (client, events) = context.connect(false).await?;
    drop(events);
    let result = async {
        for info in client.rooms().await? {
            let line = if context.json {
                json::room(&info)
            } else {
                human::room(&info)
            };
            print_out(line)?;
        }
        Ok(())
    }
    .await;
    client.close().await;
    result
}

/// `confide users [--room ROOM]`.
///
/// # Errors
/// If not logged in, the room is unknown, or the caller is not a member.
pub async fn users(context: &Context, args: UsersArgs) -> anyhow::Result<()> {
    let (client, events) = context.connect(false).await?;
    drop(events);
    let result = async {
        let name = args.room.unwrap_or_else(RoomName::lobby);
        let room = client.room_id(&name).await?;
        let place = crate::output::Place {
            label: name.to_string(),
            peer: None,
        };
        for member in client.members(room).await? {
            let line = if context.json {
                json::member(&place, room, &member)
            } else {
                human::member(&member)
            };
            print_out(line)?;
        }
        Ok(())
    }
    .await;
    client.close().await;
    result
}

/// `confide room ...`.
///
/// # Errors
/// If not logged in or the server refuses (for example `room exists`, `forbidden`).
pub async fn room(context: &Context, command: RoomCommand) -> anyhow::Result<()> {
    // A new room's key is read before connecting, so that a bad key file or a mistyped
    // passphrase fails before anything is created.
    let new_key = match &command {
        RoomCommand::Create { name, key, .. } => match key.source() {
            Some(source) => Some(room_key(&source, name, true)?),
            None => None,
        },
        _ => None,
    };
    let (client, events) = context.connect(false).await?;
    drop(events);
    let result = run(context, &client, command, new_key).await;
    client.close().await;
    result
}

async fn run(
    context: &Context,
    client: &ClientHandle,
    command: RoomCommand,
    new_key: Option<RoomKey>,
) -> anyhow::Result<()> {
    let message = match command {
        RoomCommand::Create { name, private, .. } => {
            let info = match new_key {
                Some(key) => client.create_shared_key_room(name, private, key).await?,
                None => client.create_room(name, private).await?,
            };
            if context.json {
                return Ok(print_out(json::room(&info))?);
            }
            match info.encryption {
                RoomEncryption::Mls => format!("created {}", place_of(&info).tag()),
                RoomEncryption::SharedKey { .. } => format!(
                    "created {}: {}",
                    place_of(&info).tag(),
                    info.encryption.label()
                ),
            }
        }
        RoomCommand::Key { name, key } => {
            let info = shared_key_room(client, &name).await?;
            let source = key
                .source()
                .context("name the key with --key-file or --passphrase")?;
            check_key_kind(&info, &source)?;
            client
                .add_room_key(&info, room_key(&source, &name, false)?)
                .await?;
            if context.json {
                return Ok(print_out(json::room(&info))?);
            }
            format!(
                "stored the key of {}: {}",
                place_of(&info).tag(),
                info.encryption.label()
            )
        }
        RoomCommand::Join { name } => {
            let info = client.join(name).await?;
            if context.json {
                return Ok(print_out(json::room(&info))?);
            }
            format!("joined {}", place_of(&info).tag())
        }
        RoomCommand::Leave { name } => {
            client.leave(client.room_id(&name).await?).await?;
            format!("left #{name}")
        }
        RoomCommand::Invite { name, user } => {
            client
                .invite(client.room_id(&name).await?, user.clone())
                .await?;
            format!("invited {user} to #{name}")
        }
        RoomCommand::Kick { name, user } => {
            client
                .kick(client.room_id(&name).await?, user.clone())
                .await?;
            format!("kicked {user} from #{name}")
        }
        RoomCommand::Ban { name, user } => {
            client
                .ban(client.room_id(&name).await?, user.clone())
                .await?;
            format!("banned {user} from #{name}")
        }
        RoomCommand::Unban { name, user } => {
            client
                .unban(client.room_id(&name).await?, user.clone())
                .await?;
            format!("unbanned {user} in #{name}")
        }
    };
    if !context.json {
        print_out(message)?;
    }
    Ok(())
}

/// The room called `name` that the user is in, if it has a shared key.
async fn shared_key_room(client: &ClientHandle, name: &RoomName) -> anyhow::Result<RoomInfo> {
    let info = client.rooms().await?.into_iter().find(|room| {
        room.membership == Membership::Joined
            && room.name.as_ref().is_some_and(|known| known.same_as(name))
    });
    let Some(info) = info else {
        bail!("you are not in #{name}; join it first");
    };
    if info.encryption == RoomEncryption::Mls {
        bail!("#{name} is end-to-end encrypted (MLS): it has no shared key");
    }
    Ok(info)
}

/// Refuses a key of the wrong kind before asking for a passphrase that would be
/// refused anyway.
fn check_key_kind(info: &RoomInfo, source: &KeySource) -> anyhow::Result<()> {
    let tag = place_of(info).tag();
    match (&info.encryption, source) {
        (RoomEncryption::SharedKey { salt: Some(_) }, KeySource::File(_)) => {
            bail!("{tag} uses a passphrase, not a key file: pass --passphrase")
        }
        (RoomEncryption::SharedKey { salt: None }, KeySource::Passphrase) => {
            bail!("{tag} uses a key file, not a passphrase: pass --key-file PATH")
        }
        _ => Ok(()),
    }
}

/// The key from its source: the key file read and parsed, or the passphrase from the
/// environment or a prompt (asked twice with `confirm`).
fn room_key(source: &KeySource, room: &RoomName, confirm: bool) -> anyhow::Result<RoomKey> {
    match source {
        KeySource::File(path) => Ok(RoomKey::File(read_key_file(path)?)),
        KeySource::Passphrase => Ok(RoomKey::Passphrase(password::room_passphrase(
            room, confirm,
        )?)),
    }
}

/// Reads a Fernet key file (`confide keygen`, or the original programs' `secret.key`).
fn read_key_file(path: &Path) -> anyhow::Result<SharedKey> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the key file {}", path.display()))?,
    );
    SharedKey::from_key_file(&text)
        .with_context(|| format!("{} is not a valid key file", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fixtures::{lobby, shared_room};

    #[test]
    fn key_files_are_read_or_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("secret.key");
        let key = SharedKey::generate([5; 32]);
        std::fs::write(&good, key.to_key_file().as_bytes()).unwrap();
        assert_eq!(
            read_key_file(&good).unwrap().fingerprint(),
            key.fingerprint()
        );

        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "not a key\n").unwrap();
        let err = read_key_file(&bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{} is not a valid key file", bad.display())
        );
        let missing = dir.path().join("missing.key");
        let err = read_key_file(&missing).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot read the key file {}", missing.display())
        );
    }

    #[test]
    fn the_kind_of_key_must_fit_the_room() {
        let passphrase_room = shared_room();
        let file = KeySource::File("k".into());
        assert!(check_key_kind(&passphrase_room, &KeySource::Passphrase).is_ok());
        assert_eq!(
            check_key_kind(&passphrase_room, &file)
                .unwrap_err()
                .to_string(),
            "#ops uses a passphrase, not a key file: pass --passphrase"
        );
        let mut file_room = shared_room();
        file_room.encryption = RoomEncryption::SharedKey { salt: None };
        assert!(check_key_kind(&file_room, &file).is_ok());
        assert_eq!(
            check_key_kind(&file_room, &KeySource::Passphrase)
                .unwrap_err()
                .to_string(),
            "#ops uses a key file, not a passphrase: pass --key-file PATH"
        );
        assert!(check_key_kind(&lobby(), &file).is_ok());
    }
}
