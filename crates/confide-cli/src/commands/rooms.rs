//! `rooms`, `users` and `room create|join|leave|invite|kick|ban|unban`.
//!
//! Thin wrappers over the client's room requests with one confirmation line each (or
//! JSON objects). They must not keep any state between runs.

use super::{Context, print_out};
use crate::cli::{RoomCommand, UsersArgs};
use crate::output::{human, json, place_of};
use confide_client::ClientHandle;
use confide_proto::RoomName;

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
    let (client, events) = context.connect(false).await?;
    drop(events);
    let result = run(context, &client, command).await;
    client.close().await;
    result
}

async fn run(context: &Context, client: &ClientHandle, command: RoomCommand) -> anyhow::Result<()> {
    let message = match command {
        RoomCommand::Create { name, private } => {
            let info = client.create_room(name, private).await?;
            if context.json {
                return Ok(print_out(json::room(&info))?);
            }
            format!("created {}", place_of(&info).tag())
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
