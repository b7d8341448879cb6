//! `listen`: catch up on everything missed since the last run, then print events as
//! they arrive, until interrupted, `--count` messages or `--timeout`.
//!
//! Room positions are saved by the client as events are taken from the stream, so
//! the next `listen` continues exactly after the last line printed. With `--room` or
//! `--to`, only that room's position advances. It must not print anything a filter
//! excludes, and never message text on standard error.

use super::{Context, print};
use crate::cli::ListenArgs;
use crate::output::{Human, RoomDirectory, json};
use anyhow::bail;
use confide_client::{ClientEvent, ClientHandle, ConnectionState, EventStream};
use confide_proto::RoomId;
use std::time::Duration;
use tokio::time::Instant;

/// `confide listen [--room ROOM | --to USER] [--count N] [--timeout SECS]`.
///
/// # Errors
/// If not logged in, the filter names no known room, the client gives up
/// reconnecting, or `--timeout` passes before `--count` messages arrived.
pub async fn listen(context: &Context, args: ListenArgs) -> anyhow::Result<()> {
    let deadline = match args.timeout {
        Some(secs) if secs.is_finite() && secs >= 0.0 => {
            Some(Instant::now() + Duration::from_secs_f64(secs.min(1e9)))
        }
        Some(_) => bail!("--timeout must be a number of seconds"),
        None => None,
    };
    let stop = Stop::install()?;
    let (client, mut events) = context.connect(true).await?;
    let result = run(context, &client, &mut events, &args, deadline, stop).await;
    client.close().await;
    result
}

async fn run(
    context: &Context,
    client: &ClientHandle,
    events: &mut EventStream,
    args: &ListenArgs,
    deadline: Option<Instant>,
    mut stop: Stop,
) -> anyhow::Result<()> {
    let mut directory = RoomDirectory::new();
    for info in client.rooms().await? {
        directory.insert(info);
    }
    let only = match (&args.room, &args.to) {
        (Some(name), _) => Some(client.room_id(name).await?),
        (None, Some(user)) => Some(client.direct_room_id(user).await?),
        (None, None) => None,
    };
    if let Some(room) = only {
        events.persist_only([room]);
    }
    let human = Human {
        tz: chrono::Local,
        show_room: only.is_none(),
    };
    let mut messages = 0u64;
    if args.count == Some(0) {
        return Ok(());
    }
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = stop.wait() => return Ok(()),
            () = sleep_until(deadline) => {
                return match args.count {
                    Some(count) => bail!(
                        "timed out after {}s with {messages} of {count} messages",
                        args.timeout.unwrap_or_default()
                    ),
                    None => Ok(()),
                };
            }
        };
        let Some(event) = event else {
            return Ok(());
        };
        if let ClientEvent::Connection(ConnectionState::Disconnected { reason }) = &event {
            bail!("disconnected: {reason}");
        }
        if let ClientEvent::Room(info) = &event {
            directory.insert(info.clone());
        }
        let room = event_room(&event);
        if only.is_some() && room.is_some() && room != only {
            continue;
        }
        if let Some(room) = room
            && !directory.contains(room)
        {
            for info in client.rooms().await? {
                directory.insert(info);
            }
        }
        let line = if context.json {
            json::event(&directory, &event)
        } else {
            human.event(&directory, &event)
        };
        if let Some(line) = line {
            print(&line)?;
        }
        // Unreadable messages count too: they are messages that arrived.
        if let ClientEvent::Entry { entry, .. } = &event
            && entry.is_message()
            && !entry.is_receipt()
        {
            messages += 1;
            if args.count.is_some_and(|count| messages >= count) {
                return Ok(());
            }
        }
    }
}

/// The room an event is about, if any.
fn event_room(event: &ClientEvent) -> Option<RoomId> {
    match event {
        ClientEvent::Entry { entry, .. } => Some(entry.room),
        ClientEvent::Presence { room, .. } => Some(*room),
        ClientEvent::Room(info) => Some(info.id),
        _ => None,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Ctrl-C or SIGTERM.
pub(super) struct Stop {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Stop {
    pub(super) fn install() -> anyhow::Result<Stop> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Stop {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Stop {})
    }

    pub(super) async fn wait(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
