//! `chat`: the interactive terminal UI.
//!
//! Connects like `listen` (catching up, and saving room positions as events are taken
//! from the stream), then runs one `select!` over terminal events, client events and
//! the outcomes of requests, drawing the [`AppState`] after each. Requests run as
//! tasks so that a slow answer never freezes the screen. This module is the only part
//! of the UI that touches the network and the terminal; it must not keep screen state
//! of its own (that is the [`AppState`]'s) nor print while the terminal is in use.

use super::Context;
use super::listen::Stop;
use crate::cli::ChatArgs;
use crate::output::local;
use crate::tui::state::{AppState, Effect, Level, Moderation, Outcome, Status};
use crate::tui::terminal::{ChatTerminal, TerminalGuard, is_terminal};
use crate::tui::view;
use anyhow::{Context as _, bail};
use chrono::NaiveDateTime;
use confide_client::{
    ClientHandle, ConnectionState, EventStream, Progress, TransferProgress, human_size,
    safe_file_name,
};
use confide_crypto::payload::{FilePointer, MessageId};
use confide_proto::{Membership, RoomId, RoomInfo, RoomName, Target, Timestamp};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The error for standard input or output that is not a terminal.
pub const NOT_A_TERMINAL: &str = "chat needs a terminal; use listen and send in scripts";

/// Client events handled before the screen is drawn again, so that a long catch-up
/// does not redraw once per entry.
const EVENT_BATCH: usize = 512;

/// How long leaving waits for messages that are still being sent.
const FLUSH_ON_EXIT: Duration = Duration::from_secs(3);
/// How often the screen is redrawn without input (typing notices run out).
const TICK: Duration = Duration::from_secs(1);

/// `confide chat [--room ROOM]`.
///
/// # Errors
/// If standard input or output is not a terminal, not logged in, `--room` cannot be
/// opened, the terminal fails, or the client stops (for example the session ended).
pub async fn chat(context: &Context, args: ChatArgs) -> anyhow::Result<()> {
    if !is_terminal() {
        bail!(NOT_A_TERMINAL);
    }
    let stop = Stop::install()?;
    let (client, mut events) = context.connect(true).await?;
    let result = run(&client, &mut events, args, stop).await;
    client.close().await;
    result
}

async fn run(
    client: &ClientHandle,
    events: &mut EventStream,
    args: ChatArgs,
    stop: Stop,
) -> anyhow::Result<()> {
    let mut rooms = client.rooms().await?;
    let initial = match &args.room {
        Some(name) => {
            let info = open_room(client, &rooms, name).await?;
            let id = info.id;
            rooms.retain(|room| room.id != id);
            rooms.push(info);
            Some(id)
        }
        None => None,
    };
    let mut state = AppState::new(
        client.user().username.clone(),
        client.server().address.to_string(),
        local_time,
    );
    let effects = state.start(rooms, initial);
    // Errors before this point print normally; from here the screen is the UI's.
    let (mut terminal, guard) = TerminalGuard::enter().context("cannot set up the terminal")?;
    let result = event_loop(&mut terminal, client, events, &mut state, effects, stop).await;
    drop(guard);
    result
}

/// The room `--room` names: joined already, or joined now (accepting an invitation).
async fn open_room(
    client: &ClientHandle,
    rooms: &[RoomInfo],
    name: &RoomName,
) -> anyhow::Result<RoomInfo> {
    let joined = rooms.iter().find(|room| {
        room.membership == Membership::Joined && room.name.as_ref().is_some_and(|n| n.same_as(name))
    });
    match joined {
        Some(room) => Ok(room.clone()),
        None => Ok(client.join(name.clone()).await?),
    }
}

fn local_time(timestamp: Timestamp) -> NaiveDateTime {
    local(timestamp, &chrono::Local).naive_local()
}

async fn event_loop(
    terminal: &mut ChatTerminal,
    client: &ClientHandle,
    events: &mut EventStream,
    state: &mut AppState,
    effects: Vec<Effect>,
    mut stop: Stop,
) -> anyhow::Result<()> {
    let (outcomes_tx, mut outcomes) = mpsc::unbounded_channel();
    let mut keys = crossterm::event::EventStream::new();
    let size = terminal.size()?;
    state.on_resize(size.width, size.height);
    perform(terminal, client, &outcomes_tx, effects)?;
    // Wakes the loop so that typing notices that ran out disappear.
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !state.quit {
        state.on_tick(std::time::Instant::now());
        terminal.draw(|frame| view::draw(frame, state))?;
        let effects = tokio::select! {
            event = next_terminal_event(&mut keys) => match event {
                Some(Ok(event)) => state.on_terminal_event(event),
                Some(Err(err)) => return Err(err).context("cannot read the terminal"),
                None => break,
            },
            event = events.next() => match event {
                Some(event) => {
                    let mut effects = state.on_client_event(event);
                    for _ in 0..EVENT_BATCH {
                        let Some(event) = events.try_next() else { break };
                        effects.extend(state.on_client_event(event));
                    }
                    effects
                }
                None => return Err(stopped(state)),
            },
            Some(outcome) = outcomes.recv() => state.on_outcome(outcome),
            _ = ticker.tick() => Vec::new(),
            () = stop.wait() => break,
        };
        perform(terminal, client, &outcomes_tx, effects)?;
    }
    flush_pending(terminal, state, &mut outcomes).await
}

/// Why the client stopped, from the last connection state it reported.
fn stopped(state: &AppState) -> anyhow::Error {
    match &state.connection {
        ConnectionState::Disconnected { reason } => anyhow::anyhow!("disconnected: {reason}"),
        _ => anyhow::anyhow!("disconnected"),
    }
}

/// Gives messages still being sent a moment to be acknowledged before leaving.
async fn flush_pending(
    terminal: &mut ChatTerminal,
    state: &mut AppState,
    outcomes: &mut mpsc::UnboundedReceiver<Outcome>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + FLUSH_ON_EXIT;
    while state.pending.iter().any(|pending| pending.acked.is_none()) {
        state.status = Some(Status {
            text: "sending before leaving...".to_owned(),
            level: Level::Info,
        });
        terminal.draw(|frame| view::draw(frame, state))?;
        tokio::select! {
            Some(outcome) = outcomes.recv() => {
                state.on_outcome(outcome);
            }
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    Ok(())
}

async fn next_terminal_event(
    keys: &mut crossterm::event::EventStream,
) -> Option<std::io::Result<crossterm::event::Event>> {
    std::future::poll_fn(|cx| futures_core::Stream::poll_next(Pin::new(&mut *keys), cx)).await
}

/// Starts each request as a task whose outcome comes back on `outcomes`.
fn perform(
    terminal: &mut ChatTerminal,
    client: &ClientHandle,
    outcomes: &mpsc::UnboundedSender<Outcome>,
    effects: Vec<Effect>,
) -> anyhow::Result<()> {
    for effect in effects {
        if effect == Effect::ClearScreen {
            terminal.clear()?;
            continue;
        }
        let client = client.clone();
        let outcomes = outcomes.clone();
        tokio::spawn(async move {
            let outcome = run_effect(&client, effect, &outcomes).await;
            // The loop has ended if nobody receives; the outcome no longer matters.
            if let Some(outcome) = outcome {
                let _ = outcomes.send(outcome);
            }
        });
    }
    Ok(())
}

/// Carries out one effect of the chat screen; answers its outcome, if it has one.
/// Transfers also send [`Outcome::Progress`] on `outcomes` as they go.
pub async fn run_effect(
    client: &ClientHandle,
    effect: Effect,
    outcomes: &mpsc::UnboundedSender<Outcome>,
) -> Option<Outcome> {
    let text = |err: confide_client::ClientError| err.to_string();
    let outcome = match effect {
        Effect::Send {
            pending,
            target,
            text: message,
        } => Outcome::Sent {
            pending,
            result: client.send_text(target, &message).await.map_err(text),
        },
        Effect::History {
            room,
            before,
            limit,
        } => Outcome::History {
            room,
            result: client.history(room, before, limit).await.map_err(text),
        },
        Effect::Members { room } => Outcome::Members {
            room,
            result: client.members(room).await.map_err(text),
        },
        Effect::Join { name } => Outcome::Entered {
            verb: "joined",
            result: client.join(name).await.map_err(text),
        },
        Effect::Create { name, private } => Outcome::Entered {
            verb: "created",
            result: client.create_room(name, private).await.map_err(text),
        },
        Effect::Leave { room, tag } => Outcome::Done(
            client
                .leave(room)
                .await
                .map(|()| format!("left {tag}"))
                .map_err(text),
        ),
        Effect::Moderate {
            action,
            room,
            tag,
            user,
        } => {
            let result = match action {
                Moderation::Invite => client.invite(room, user.clone()).await,
                Moderation::Kick => client.kick(room, user.clone()).await,
                Moderation::Ban => client.ban(room, user.clone()).await,
            };
            let done = match action {
                Moderation::Invite => format!("invited {user} to {tag}"),
                Moderation::Kick => format!("kicked {user} from {tag}"),
                Moderation::Ban => format!("banned {user} from {tag}"),
            };
            Outcome::Done(result.map(|()| done).map_err(text))
        }
        Effect::Rooms { show } => Outcome::Rooms {
            show,
            result: client.rooms().await.map_err(text),
        },
        Effect::Typing { room, active } => {
            // Best effort: a lost typing notice is not worth a status message.
            if let Err(err) = client.typing(room, active).await {
                tracing::debug!(cause = %err, "cannot send a typing notice");
            }
            return None;
        }
        Effect::SendFile { target, path } => {
            Outcome::Done(send_file(client, target, &path, outcomes).await)
        }
        Effect::SaveFile { pointer, out } => {
            Outcome::Done(save_file(client, &pointer, out.as_deref(), outcomes).await)
        }
        Effect::Edit { room, target, text } => Outcome::Done(
            client
                .edit(room, target, &text)
                .await
                .map(|_| "message edited".to_owned())
                .map_err(|err| format!("not edited: {err}")),
        ),
        Effect::Delete { room, target, file } => {
            Outcome::Done(delete(client, room, target, file.as_deref()).await)
        }
        Effect::Reply { room, to, text } => Outcome::Done(
            client
                .reply(room, to, &text)
                .await
                .map(|_| "reply sent".to_owned())
                .map_err(|err| format!("reply not sent: {err}")),
        ),
        Effect::React {
            room,
            target,
            emoji,
            add,
        } => Outcome::Done(
            client
                .react(room, target, &emoji, add)
                .await
                .map(|_| {
                    if add {
                        "reaction added".to_owned()
                    } else {
                        "reaction taken back".to_owned()
                    }
                })
                .map_err(|err| format!("no reaction: {err}")),
        ),
        Effect::ClearScreen => return None,
    };
    Some(outcome)
}

/// `/delete`: the message for everyone first, so that nobody is offered a file that is
/// gone, then its file from the server.
async fn delete(
    client: &ClientHandle,
    room: RoomId,
    target: MessageId,
    file: Option<&FilePointer>,
) -> Result<String, String> {
    client
        .delete(room, target)
        .await
        .map_err(|err| format!("not deleted: {err}"))?;
    let Some(file) = file else {
        return Ok("message deleted".to_owned());
    };
    let name = safe_file_name(&file.name);
    match client.delete_blob(file).await {
        Ok(true) => Ok(format!("deleted {name}, and its file from the server")),
        Ok(false) => Ok(format!(
            "deleted {name}; its file was no longer on the server"
        )),
        Err(err) => Err(format!(
            "deleted the message, but {name} stays on the server: {err}"
        )),
    }
}

/// Reports a transfer's progress as outcomes, once per percent.
fn progress(verb: &'static str, name: &str, outcomes: &mpsc::UnboundedSender<Outcome>) -> Progress {
    let name = name.to_owned();
    let outcomes = outcomes.clone();
    let last = AtomicU64::new(u64::MAX);
    Arc::new(move |step: TransferProgress| {
        let percent = step
            .done
            .saturating_mul(100)
            .checked_div(step.total)
            .unwrap_or(100);
        if last.swap(percent, Ordering::Relaxed) != percent {
            let _ = outcomes.send(Outcome::Progress {
                verb,
                name: name.clone(),
                done: step.done,
                total: step.total,
            });
        }
    })
}

/// `~/x` as the home directory's `x`; other paths as typed.
fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_owned(),
    }
}

/// `/file PATH`: encrypts, uploads and announces the file.
async fn send_file(
    client: &ClientHandle,
    target: Target,
    path: &Path,
    outcomes: &mpsc::UnboundedSender<Outcome>,
) -> Result<String, String> {
    let path = expand_home(path);
    let meta = tokio::fs::metadata(&path)
        .await
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let name = path
        .file_name()
        .map(|name| safe_file_name(&name.to_string_lossy()))
        .unwrap_or_else(|| "file".to_owned());
    let sent = client
        .send_file(target, &path, progress("sending", &name, outcomes))
        .await
        .map_err(|err| format!("cannot send {name}: {err}"))?;
    Ok(format!("sent {name} ({})", human_size(sent.pointer.size)))
}

/// `/save [N] [PATH]`: downloads, decrypts and checks the file, then saves it as
/// `out`, inside `out` if it is a directory, or in the current directory under the
/// sender's name for it. Never overwrites.
async fn save_file(
    client: &ClientHandle,
    pointer: &FilePointer,
    out: Option<&Path>,
    outcomes: &mpsc::UnboundedSender<Outcome>,
) -> Result<String, String> {
    let name = safe_file_name(&pointer.name);
    let out = out.map(expand_home);
    let destination = match out {
        Some(dir)
            if tokio::fs::metadata(&dir)
                .await
                .is_ok_and(|meta| meta.is_dir()) =>
        {
            dir.join(&name)
        }
        Some(path) => path,
        None => PathBuf::from(&name),
    };
    if tokio::fs::symlink_metadata(&destination).await.is_ok() {
        return Err(format!(
            "{} exists; give another path: /save N PATH",
            destination.display()
        ));
    }
    let size = client
        .download_file(
            pointer,
            &destination,
            false,
            progress("saving", &name, outcomes),
        )
        .await
        .map_err(|err| format!("cannot save {name}: {err}"))?;
    let shown = std::path::absolute(&destination).unwrap_or(destination);
    Ok(format!(
        "saved {name} ({}) to {}",
        human_size(size),
        shown.display()
    ))
}
