//! `send`: one message to a room or a user, acknowledged once stored.
//!
//! Prints nothing on success (a `sent` object with `--json`), so scripts can rely on
//! the exit status. It must not print or log the message text.

use super::{Context, print_out};
use crate::cli::SendArgs;
use crate::output::{Place, json};
use anyhow::{Context as _, bail};
use confide_proto::Target;
use std::io::Read;

/// `confide send (--room ROOM | --to USER) TEXT...`.
///
/// # Errors
/// If the text is empty, not logged in, or the server refuses (for example `no such
/// room`, `not a member`).
pub async fn send(context: &Context, args: SendArgs) -> anyhow::Result<()> {
    let text = if args.text == ["-"] {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the message from standard input")?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        text
    } else {
        args.text.join(" ")
    };
    if text.is_empty() {
        bail!("nothing to send: the message is empty");
    }
    let (client, events) = context.connect(false).await?;
    // Only the acknowledgement matters; let the client discard events.
    drop(events);
    let result = async {
        let (target, place) = match (&args.target.room, &args.target.to) {
            (Some(name), _) => (
                Target::Room(client.room_id(name).await?),
                Place {
                    label: name.to_string(),
                    peer: None,
                },
            ),
            (None, Some(user)) => (
                Target::User(user.to_string()),
                Place {
                    label: format!("@{user}"),
                    peer: Some(user.to_string()),
                },
            ),
            (None, None) => bail!("name a room with --room or a user with --to"),
        };
        let ack = client.send_text(target, &text).await?;
        if context.json {
            print_out(json::sent(&place, &ack))?;
        }
        Ok(())
    }
    .await;
    client.close().await;
    result
}
