//! [`AppState`]: everything the chat screen shows, and how it changes.
//!
//! The state holds the client core's view models ([`RoomList`], [`Timeline`],
//! [`Presence`]) plus what only this screen has: the input line, the status line,
//! a security alert, scrolling, a help or room listing window, and messages sent but
//! not yet stored. It
//! changes only through the `on_*` methods, one per kind of input (a key, a paste, a
//! resize, a client event, the outcome of a request). Each returns the [`Effect`]s to
//! carry out (requests to the server); their results come back as [`Outcome`]s.
//!
//! This module must not perform I/O, spawn tasks or read the clock: the chat command
//! runs the effects, and the view only reads the state. That keeps every behaviour of
//! the screen testable as a plain function call.

use super::command::{HELP, Input, SlashCommand, parse_input};
use super::input::{Action, InputLine};
use super::view;
use crate::output::{human, place_of};
use chrono::NaiveDateTime;
use confide_client::model::{LineKind, Media, Reaction, TimelineLine};
use confide_client::model::{Presence, RoomList, RoomSummary, Timeline, Typing};
use confide_client::{ClientEvent, ConnectionState, HistoryPage, SentAck};
use confide_client::{human_size, safe_file_name};
use confide_crypto::payload::{FilePointer, MessageId};
use confide_proto::{
    MemberInfo, Membership, RoomId, RoomInfo, RoomName, Seq, Target, Timestamp, UserName,
};
use crossterm::event::Event;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

/// Turns a server timestamp into the wall-clock time to show (the local time zone in
/// the binary, UTC in tests).
pub type LocalTime = fn(Timestamp) -> NaiveDateTime;

/// Entries asked for per history request, and the fewest a room should show on entry.
pub const HISTORY_PAGE: u32 = 100;

/// Why `/reply` or `/react` has nothing to answer.
const NOTHING_TO_ANSWER: &str =
    "nothing to answer here yet: nobody else has written (older messages load with PageUp)";

/// A request for the chat command to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send a text message; answered by [`Outcome::Sent`].
    Send {
        /// Which pending message this is.
        pending: u64,
        /// Where.
        target: Target,
        /// What.
        text: String,
    },
    /// Fetch older history; answered by [`Outcome::History`].
    History {
        /// The room.
        room: RoomId,
        /// Entries before this one (the newest if `None`).
        before: Option<Seq>,
        /// How many.
        limit: u32,
    },
    /// Fetch a room's members; answered by [`Outcome::Members`].
    Members {
        /// The room.
        room: RoomId,
    },
    /// Join a room; answered by [`Outcome::Entered`].
    Join {
        /// The room.
        name: RoomName,
    },
    /// Create a room; answered by [`Outcome::Entered`].
    Create {
        /// Its name.
        name: RoomName,
        /// Invitation only.
        private: bool,
    },
    /// Leave a room; answered by [`Outcome::Done`].
    Leave {
        /// The room.
        room: RoomId,
        /// How to name it in the confirmation (`#dev`).
        tag: String,
    },
    /// Invite, kick or ban a user; answered by [`Outcome::Done`].
    Moderate {
        /// Which.
        action: Moderation,
        /// The room.
        room: RoomId,
        /// How to name it in the confirmation.
        tag: String,
        /// Who.
        user: UserName,
    },
    /// List rooms; answered by [`Outcome::Rooms`]. `show` opens the listing window;
    /// without it the room list is only refreshed.
    Rooms {
        /// Whether to show the listing.
        show: bool,
    },
    /// Tell a room this user is typing, or stopped (the client core throttles it; no
    /// outcome).
    Typing {
        /// The room.
        room: RoomId,
        /// Typing or stopped.
        active: bool,
    },
    /// Encrypt, upload and announce a file; answered by [`Outcome::Progress`] as it
    /// goes and [`Outcome::Done`] at the end.
    SendFile {
        /// Where.
        target: Target,
        /// The file, as typed.
        path: PathBuf,
    },
    /// Download, decrypt and check a file, then save it as `out`, inside `out` if it
    /// is a directory, or in the current directory under its own name; answered like
    /// [`Effect::SendFile`]. An existing file is never overwritten.
    SaveFile {
        /// The file (boxed: it is large).
        pointer: Box<FilePointer>,
        /// Where, as typed.
        out: Option<PathBuf>,
    },
    /// Replace the text of one of the user's messages; answered by [`Outcome::Done`].
    Edit {
        /// The room.
        room: RoomId,
        /// The message.
        target: MessageId,
        /// The new text.
        text: String,
    },
    /// Delete one of the user's messages for everyone, then the file it carries from
    /// the server; answered by [`Outcome::Done`].
    Delete {
        /// The room.
        room: RoomId,
        /// The message.
        target: MessageId,
        /// Its file, if it carries one (boxed: it is large).
        file: Option<Box<FilePointer>>,
    },
    /// Reply to a message; answered by [`Outcome::Done`].
    Reply {
        /// The room.
        room: RoomId,
        /// The message replied to.
        to: MessageId,
        /// The reply.
        text: String,
    },
    /// Add a reaction to a message, or take one back; answered by [`Outcome::Done`].
    React {
        /// The room.
        room: RoomId,
        /// The message.
        target: MessageId,
        /// The emoji.
        emoji: String,
        /// Add it (or take back this user's).
        add: bool,
    },
    /// Clear and redraw the whole terminal.
    ClearScreen,
}

/// The moderation requests of [`Effect::Moderate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moderation {
    /// `/invite`.
    Invite,
    /// `/kick`.
    Kick,
    /// `/ban`.
    Ban,
}

/// The result of an [`Effect`]. Errors are the client's one-line messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A message was stored, or not.
    Sent {
        /// The pending message.
        pending: u64,
        /// The acknowledgement.
        result: Result<SentAck, String>,
    },
    /// A page of history.
    History {
        /// The room.
        room: RoomId,
        /// The page.
        result: Result<HistoryPage, String>,
    },
    /// A room's members.
    Members {
        /// The room.
        room: RoomId,
        /// The members.
        result: Result<Vec<MemberInfo>, String>,
    },
    /// A room was joined or created.
    Entered {
        /// `joined` or `created`.
        verb: &'static str,
        /// The room.
        result: Result<RoomInfo, String>,
    },
    /// A request without data finished; the text confirms it.
    Done(Result<String, String>),
    /// How far a file transfer got.
    Progress {
        /// `sending` or `saving`.
        verb: &'static str,
        /// The file's name.
        name: String,
        /// Bytes done.
        done: u64,
        /// Bytes in all.
        total: u64,
    },
    /// The room listing.
    Rooms {
        /// Whether to show it.
        show: bool,
        /// The rooms.
        result: Result<Vec<RoomInfo>, String>,
    },
}

/// How serious a status message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// A confirmation.
    Info,
    /// Something to know (for example skipped entries).
    Warning,
    /// A command failed.
    Error,
}

/// The message on the status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The text.
    pub text: String,
    /// How serious.
    pub level: Level,
}

/// A window over the conversation (help, room listing), closed with Esc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// Its title.
    pub title: String,
    /// Its lines.
    pub lines: Vec<String>,
}

/// Where a pending message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingTarget {
    /// A room or known conversation.
    Room(RoomId),
    /// The conversation with a user, which may not exist yet.
    User(UserName),
}

/// A message sent but not yet shown from the room's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMessage {
    /// Its number.
    pub id: u64,
    /// Where it goes.
    pub target: PendingTarget,
    /// Its text.
    pub text: String,
    /// The server's acknowledgement, once it came (the entry itself may come later).
    pub acked: Option<SentAck>,
}

/// Everything the chat screen shows.
#[derive(Debug)]
pub struct AppState {
    /// Who is logged in.
    pub me: UserName,
    /// The server, for the status line.
    pub server: String,
    /// The rooms, with the selection (the current conversation).
    pub rooms: RoomList,
    /// The conversations' lines.
    pub timeline: Timeline,
    /// Who is online where.
    pub presence: Presence,
    /// Who is typing where.
    pub typing: Typing,
    /// The time of the last [`AppState::on_tick`] (this module never reads the clock).
    pub now: Option<Instant>,
    /// The line being typed.
    pub input: InputLine,
    /// The connection's state.
    pub connection: ConnectionState,
    /// Whether a catch-up is running.
    pub syncing: bool,
    /// The status message.
    pub status: Option<Status>,
    /// A security warning that stays until dismissed with Esc (the identity key of a
    /// verified user changed), so that no routine status message hides it.
    pub alert: Option<String>,
    /// The window over the conversation.
    pub overlay: Option<Overlay>,
    /// Messages sent and not yet in the timeline, oldest first.
    pub pending: Vec<PendingMessage>,
    /// How many rows the conversation is scrolled up from the newest.
    pub scroll: usize,
    /// The terminal's size (columns, rows).
    pub size: (u16, u16),
    /// How to show times.
    pub local_time: LocalTime,
    /// Set when the user asked to leave.
    pub quit: bool,
    next_pending: u64,
    history_in_flight: HashSet<RoomId>,
    members_in_flight: HashSet<RoomId>,
    refreshing_rooms: bool,
    // After `/msg` to someone without a conversation yet: switch to it once it exists.
    open_direct: Option<UserName>,
    // The room this user was last said to be typing in.
    typing_in: Option<RoomId>,
}

impl AppState {
    /// A state for `me` on `server`, connected, with no rooms yet.
    #[must_use]
    pub fn new(me: UserName, server: String, local_time: LocalTime) -> AppState {
        AppState {
            rooms: RoomList::new(me.clone()),
            me,
            server,
            timeline: Timeline::new(),
            presence: Presence::new(),
            typing: Typing::new(),
            now: None,
            input: InputLine::new(),
            connection: ConnectionState::Connected,
            syncing: true,
            status: None,
            alert: None,
            overlay: None,
            pending: Vec::new(),
            scroll: 0,
            size: (80, 24),
            local_time,
            quit: false,
            next_pending: 1,
            history_in_flight: HashSet::new(),
            members_in_flight: HashSet::new(),
            refreshing_rooms: false,
            open_direct: None,
            typing_in: None,
        }
    }

    /// The clock moved on (called before each redraw): typing notices run out.
    pub fn on_tick(&mut self, now: Instant) {
        self.now = Some(now);
        self.typing.expire(now);
    }

    /// Who is typing in the current conversation, as a line to show.
    #[must_use]
    pub fn typing_line(&self) -> Option<String> {
        let room = self.rooms.selected_id()?;
        self.typing.describe(room, self.now?)
    }

    /// Fills the room list from the server's listing and opens `initial` (else the
    /// lobby, else the first room).
    pub fn start(&mut self, rooms: Vec<RoomInfo>, initial: Option<RoomId>) -> Vec<Effect> {
        self.rooms.replace(rooms);
        let room = initial
            .filter(|room| self.rooms.get(*room).is_some())
            .or_else(|| self.rooms.lobby().map(RoomSummary::id))
            .or_else(|| self.rooms.rooms().first().map(RoomSummary::id));
        match room {
            Some(room) => self.enter(room),
            None => Vec::new(),
        }
    }

    /// The current conversation.
    #[must_use]
    pub fn current(&self) -> Option<&RoomSummary> {
        self.rooms.selected()
    }

    /// Whether older history of the room is being fetched.
    #[must_use]
    pub fn loading_history(&self, room: RoomId) -> bool {
        self.history_in_flight.contains(&room)
    }

    /// The pending messages to show in a room.
    pub fn pending_in(&self, room: RoomId) -> impl Iterator<Item = &PendingMessage> + '_ {
        let peer = self.rooms.get(room).and_then(RoomSummary::peer);
        self.pending
            .iter()
            .filter(move |pending| match &pending.target {
                PendingTarget::Room(id) => *id == room,
                PendingTarget::User(user) => peer.is_some_and(|peer| peer.same_as(user)),
            })
    }

    /// A terminal event: a key, a paste or a resize.
    pub fn on_terminal_event(&mut self, event: Event) -> Vec<Effect> {
        match event {
            Event::Key(key) => match super::input::action_for(&key) {
                Some(action) => self.on_action(action),
                None => Vec::new(),
            },
            Event::Paste(text) => {
                self.input.insert_str(&text);
                self.typing_effects()
            }
            Event::Resize(columns, rows) => {
                self.on_resize(columns, rows);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// The terminal's new size.
    pub fn on_resize(&mut self, columns: u16, rows: u16) {
        self.size = (columns, rows);
    }

    /// What a key asks for.
    pub fn on_action(&mut self, action: Action) -> Vec<Effect> {
        match action {
            Action::Quit => self.quit = true,
            Action::Submit => return self.submit(),
            Action::NextRoom => {
                if let Some(room) = self.rooms.select_next() {
                    let mut effects = self.typing_effects();
                    effects.extend(self.enter(room));
                    return effects;
                }
            }
            Action::PreviousRoom => {
                if let Some(room) = self.rooms.select_previous() {
                    let mut effects = self.typing_effects();
                    effects.extend(self.enter(room));
                    return effects;
                }
            }
            Action::PageUp => return self.page_up(),
            Action::PageDown => {
                let page = self.page();
                self.scroll = self.scroll.saturating_sub(page);
            }
            Action::Dismiss => {
                if self.overlay.take().is_none() && self.alert.take().is_none() {
                    self.status = None;
                }
            }
            Action::Redraw => return vec![Effect::ClearScreen],
            editing => {
                let before = self.input.as_str().to_owned();
                self.input.edit(editing);
                if self.input.as_str() != before {
                    return self.typing_effects();
                }
            }
        }
        Vec::new()
    }

    /// What to tell rooms about this user typing, after the input or the current room
    /// changed: "typing" while a message (not a command) is being written in a joined
    /// room, "stopped" to the room typed in before once that is no longer so.
    fn typing_effects(&mut self) -> Vec<Effect> {
        let text = self.input.as_str();
        let composing = !text.trim().is_empty() && !text.starts_with('/');
        let here = self
            .current()
            .filter(|room| room.is_joined())
            .map(RoomSummary::id)
            .filter(|_| composing);
        let mut effects = Vec::new();
        if let Some(before) = self.typing_in
            && Some(before) != here
        {
            effects.push(Effect::Typing {
                room: before,
                active: false,
            });
        }
        if let Some(room) = here {
            effects.push(Effect::Typing { room, active: true });
        }
        self.typing_in = here;
        effects
    }

    /// An event from the client core.
    pub fn on_client_event(&mut self, event: ClientEvent) -> Vec<Effect> {
        let selected_before = self.rooms.selected_id();
        let previous = match &event {
            ClientEvent::Room(info) => self.rooms.get(info.id).map(|room| room.info.clone()),
            _ => None,
        };
        self.rooms.apply(&event);
        let changed = self.timeline.apply(&event);
        self.presence.apply(&event);
        if let Some(now) = self.now {
            self.typing.apply(&event, now);
        }

        let mut effects = Vec::new();
        match &event {
            ClientEvent::Entry { entry, .. } => {
                self.pending.retain(|pending| {
                    pending
                        .acked
                        .is_none_or(|ack| ack.room != entry.room || ack.seq != entry.seq)
                });
                if self.rooms.get(entry.room).is_none() && !self.refreshing_rooms {
                    self.refreshing_rooms = true;
                    effects.push(Effect::Rooms { show: false });
                }
                // Keep the view still while scrolled up and new lines arrive below.
                if changed
                    && self.scroll > 0
                    && selected_before == Some(entry.room)
                    && self.timeline.newest_seq(entry.room) == Some(entry.seq)
                {
                    let (width, _) = view::conversation_viewport(self.size);
                    self.scroll += view::newest_line_rows(self, entry.room, width);
                }
            }
            ClientEvent::Room(info) => effects.extend(self.on_room(info, previous)),
            ClientEvent::Connection(state) => {
                self.connection = state.clone();
                if *state == ConnectionState::Connected {
                    self.syncing = true;
                    // Presence was forgotten; fetch the current room's again.
                    if let Some(room) = self.rooms.selected_id() {
                        effects.extend(self.load(room));
                    }
                }
            }
            ClientEvent::SyncComplete => self.syncing = false,
            ClientEvent::Warning(message) => self.set_status(Level::Warning, message.clone()),
            ClientEvent::IdentityChanged {
                user,
                key_changed,
                was_verified,
            } => {
                let text = human::identity_change(user, *key_changed, *was_verified);
                if human::is_loud(*key_changed, *was_verified) {
                    self.alert = Some(text);
                } else {
                    self.set_status(Level::Warning, text);
                }
            }
            _ => {}
        }
        let selected_after = self.rooms.selected_id();
        if selected_after != selected_before
            && let Some(room) = selected_after
        {
            self.scroll = 0;
            effects.extend(self.load(room));
        }
        effects
    }

    /// The result of a request.
    pub fn on_outcome(&mut self, outcome: Outcome) -> Vec<Effect> {
        match outcome {
            Outcome::Sent { pending, result } => return self.on_sent(pending, result),
            Outcome::History { room, result } => {
                self.history_in_flight.remove(&room);
                match result {
                    Ok(page) => {
                        self.timeline.load_history(&page.entries);
                        if !page.more {
                            self.timeline.mark_complete(room);
                        }
                    }
                    Err(err) => {
                        self.set_status(Level::Error, format!("cannot load history: {err}"))
                    }
                }
            }
            Outcome::Members { room, result } => {
                self.members_in_flight.remove(&room);
                match result {
                    Ok(members) => {
                        if self.rooms.get(room).is_some_and(RoomSummary::is_joined) {
                            self.presence.seed(room, &members);
                        }
                    }
                    Err(err) => {
                        self.set_status(Level::Error, format!("cannot list members: {err}"))
                    }
                }
            }
            Outcome::Entered { verb, result } => match result {
                Ok(info) => {
                    self.set_status(Level::Info, format!("{verb} {}", place_of(&info).tag()));
                    let room = info.id;
                    self.rooms.insert(info);
                    return self.enter(room);
                }
                Err(err) => self.set_status(Level::Error, err),
            },
            Outcome::Done(Ok(text)) => self.set_status(Level::Info, text),
            Outcome::Done(Err(err)) => self.set_status(Level::Error, err),
            Outcome::Progress {
                verb,
                name,
                done,
                total,
            } => {
                let percent = done.saturating_mul(100).checked_div(total).unwrap_or(100);
                self.set_status(
                    Level::Info,
                    format!("{verb} {name}: {percent}% of {}", human_size(total)),
                );
            }
            Outcome::Rooms { show, result } => {
                if !show {
                    self.refreshing_rooms = false;
                }
                match result {
                    Ok(rooms) => {
                        if show {
                            self.overlay = Some(Overlay {
                                title: "rooms".to_owned(),
                                lines: if rooms.is_empty() {
                                    vec!["no rooms".to_owned()]
                                } else {
                                    rooms.iter().map(human::room).collect()
                                },
                            });
                        }
                        let selected = self.rooms.selected_id();
                        self.rooms.replace(rooms);
                        if self.rooms.selected_id() != selected
                            && let Some(room) = self.rooms.selected_id()
                        {
                            return self.enter(room);
                        }
                    }
                    Err(err) => self.set_status(Level::Error, err),
                }
            }
        }
        Vec::new()
    }

    fn on_room(&mut self, info: &RoomInfo, previous: Option<RoomInfo>) -> Vec<Effect> {
        let tag = place_of(info).tag();
        match info.membership {
            Membership::Joined => {
                let wanted = self.open_direct.as_ref().is_some_and(|peer| {
                    self.rooms
                        .get(info.id)
                        .and_then(RoomSummary::peer)
                        .is_some_and(|p| p.same_as(peer))
                });
                if wanted {
                    self.open_direct = None;
                    return self.enter(info.id);
                }
                if self.rooms.selected_id() == Some(info.id) {
                    // For example an invitation accepted from another device.
                    return self.load(info.id);
                }
            }
            Membership::Invited => {
                if previous.is_none_or(|known| known.membership != Membership::Invited) {
                    self.set_status(
                        Level::Info,
                        format!("you are invited to {tag}; open it and type /join to accept"),
                    );
                }
            }
            Membership::None => {
                if previous.is_some() {
                    self.set_status(Level::Info, format!("you are no longer in {tag}"));
                }
            }
        }
        Vec::new()
    }

    fn on_sent(&mut self, pending: u64, result: Result<SentAck, String>) -> Vec<Effect> {
        let Some(index) = self.pending.iter().position(|p| p.id == pending) else {
            return Vec::new();
        };
        match result {
            Ok(ack) => {
                let message = &mut self.pending[index];
                let wanted = match &message.target {
                    PendingTarget::User(peer) => {
                        self.open_direct.as_ref().is_some_and(|p| p.same_as(peer))
                    }
                    PendingTarget::Room(_) => false,
                };
                message.target = PendingTarget::Room(ack.room);
                message.acked = Some(ack);
                if self.timeline.contains(ack.room, ack.seq) {
                    self.pending.remove(index);
                }
                if wanted && self.rooms.get(ack.room).is_some() {
                    self.open_direct = None;
                    return self.enter(ack.room);
                }
            }
            Err(err) => {
                let message = self.pending.remove(index);
                if let PendingTarget::User(peer) = &message.target
                    && self.open_direct.as_ref().is_some_and(|p| p.same_as(peer))
                {
                    self.open_direct = None;
                }
                self.set_status(Level::Error, format!("not sent: {err}"));
                // Give the text back so it can be sent again, but only as something
                // that goes to the same place when Enter is pressed.
                let retry = match &message.target {
                    PendingTarget::User(peer) => Some(format!("/msg {peer} {}", message.text)),
                    PendingTarget::Room(room) if self.rooms.selected_id() == Some(*room) => {
                        Some(message.text)
                    }
                    PendingTarget::Room(_) => None,
                };
                if let Some(retry) = retry
                    && self.input.is_empty()
                {
                    self.input.set(retry);
                }
            }
        }
        Vec::new()
    }

    fn submit(&mut self) -> Vec<Effect> {
        let line = self.input.take();
        // A message ends typing by itself (receivers stop showing it when it arrives).
        self.typing_in = None;
        self.overlay = None;
        match parse_input(&line) {
            Ok(Input::Nothing) => Vec::new(),
            Ok(Input::Message(text)) => {
                let room = match self.current() {
                    None => Err("no conversation is open".to_owned()),
                    Some(room) if !room.is_joined() => Err(format!(
                        "you are invited to {}; type /join to accept",
                        place_of(&room.info).tag()
                    )),
                    Some(room) => Ok(room.id()),
                };
                match room {
                    Ok(room) => self.send(PendingTarget::Room(room), Target::Room(room), text),
                    Err(err) => {
                        self.input.set(line);
                        self.set_status(Level::Error, err);
                        Vec::new()
                    }
                }
            }
            Ok(Input::Command(command)) => self.command(command),
            Err(err) => {
                // Keep the line so the mistake can be fixed.
                self.input.set(line);
                self.set_status(Level::Error, err.to_string());
                Vec::new()
            }
        }
    }

    fn command(&mut self, command: SlashCommand) -> Vec<Effect> {
        match command {
            SlashCommand::Join(Some(name)) => vec![Effect::Join { name }],
            SlashCommand::Join(None) => match self.current() {
                Some(room) if room.is_invitation() => match &room.info.name {
                    Some(name) => vec![Effect::Join { name: name.clone() }],
                    None => self.fail("usage: /join ROOM"),
                },
                _ => self.fail("usage: /join ROOM"),
            },
            SlashCommand::Create { name, private } => vec![Effect::Create { name, private }],
            SlashCommand::Leave => match self.current_room() {
                Ok((room, tag)) => vec![Effect::Leave { room, tag }],
                Err(err) => self.fail(&err),
            },
            SlashCommand::Invite(user) => self.moderate(Moderation::Invite, user),
            SlashCommand::Kick(user) => self.moderate(Moderation::Kick, user),
            SlashCommand::Ban(user) => self.moderate(Moderation::Ban, user),
            SlashCommand::Msg { to, text } => {
                if let Some(room) = self.rooms.find_direct(&to).map(RoomSummary::id) {
                    let mut effects = self.enter(room);
                    effects.extend(self.send(PendingTarget::Room(room), Target::Room(room), text));
                    return effects;
                }
                self.open_direct = Some(to.clone());
                let target = Target::User(to.to_string());
                self.send(PendingTarget::User(to), target, text)
            }
            SlashCommand::Rooms => vec![Effect::Rooms { show: true }],
            SlashCommand::SendFile(path) => match self.current_room() {
                Ok((room, _)) => vec![Effect::SendFile {
                    target: Target::Room(room),
                    path,
                }],
                Err(err) => self.fail(&err),
            },
            SlashCommand::Files => match self.current_room() {
                Ok((room, tag)) => {
                    let lines: Vec<String> = self
                        .files(room)
                        .enumerate()
                        .map(|(index, (line, pointer))| {
                            format!(
                                "{:>3}  {} ({}) from {}, {}",
                                index + 1,
                                safe_file_name(&pointer.name),
                                human_size(pointer.size),
                                line.sender,
                                (self.local_time)(line.timestamp).format("%Y-%m-%d %H:%M")
                            )
                        })
                        .collect();
                    self.overlay = Some(Overlay {
                        title: format!("files in {tag}"),
                        lines: if lines.is_empty() {
                            vec![no_files(self.timeline.is_complete(room))]
                        } else {
                            lines
                        },
                    });
                    Vec::new()
                }
                Err(err) => self.fail(&err),
            },
            SlashCommand::Save { number, path } => {
                let room = match self.current_room() {
                    Ok((room, _)) => room,
                    Err(err) => return self.fail(&err),
                };
                let wanted = number.unwrap_or(1);
                let found = self
                    .files(room)
                    .nth(wanted.saturating_sub(1))
                    .map(|(_, pointer)| Box::new(pointer.clone()));
                match found {
                    Some(pointer) => vec![Effect::SaveFile { pointer, out: path }],
                    None => {
                        let count = self.files(room).count();
                        let text = if count == 0 {
                            no_files(self.timeline.is_complete(room))
                        } else {
                            format!("there is no file {wanted}: /files lists {count}")
                        };
                        self.fail(&text)
                    }
                }
            }
            SlashCommand::Edit(text) => match self.current_room() {
                Ok((room, _)) => match self.editable(room) {
                    Ok(target) => vec![Effect::Edit { room, target, text }],
                    Err(err) => self.fail(err),
                },
                Err(err) => self.fail(&err),
            },
            SlashCommand::Delete(number) => match self.current_room() {
                Ok((room, _)) => match self.deletable(room, number) {
                    Ok(effect) => vec![effect],
                    Err(err) => self.fail(&err),
                },
                Err(err) => self.fail(&err),
            },
            SlashCommand::Reply(text) => match self.current_room() {
                Ok((room, _)) => match self.answerable(room) {
                    Some((to, _)) => vec![Effect::Reply { room, to, text }],
                    None => self.fail(NOTHING_TO_ANSWER),
                },
                Err(err) => self.fail(&err),
            },
            SlashCommand::React(emoji) => match self.current_room() {
                Ok((room, _)) => match self.answerable(room) {
                    Some((target, reactions)) => {
                        let mine = reactions.iter().any(|reaction| {
                            reaction.emoji == emoji
                                && reaction
                                    .users
                                    .iter()
                                    .any(|user| user.canonical() == self.me.canonical())
                        });
                        vec![Effect::React {
                            room,
                            target,
                            emoji,
                            add: !mine,
                        }]
                    }
                    None => self.fail(NOTHING_TO_ANSWER),
                },
                Err(err) => self.fail(&err),
            },
            SlashCommand::Help => {
                self.overlay = Some(Overlay {
                    title: "help".to_owned(),
                    lines: HELP.iter().map(|line| (*line).to_owned()).collect(),
                });
                Vec::new()
            }
            SlashCommand::Quit => {
                self.quit = true;
                Vec::new()
            }
        }
    }

    /// The newest message in `room` from someone else that is not deleted, and its
    /// reactions: what `/reply` and `/react` answer.
    fn answerable(&self, room: RoomId) -> Option<(MessageId, &[Reaction])> {
        self.timeline
            .lines(room)
            .rev()
            .filter(|line| line.sender.canonical() != self.me.canonical())
            .find_map(|line| match &line.kind {
                LineKind::Message {
                    id,
                    deleted: false,
                    reactions,
                    ..
                } => Some((*id, reactions.as_slice())),
                _ => None,
            })
    }

    /// The user's newest message in `room` that is not deleted, if it is text (files
    /// and voice messages cannot be edited).
    fn editable(&self, room: RoomId) -> Result<MessageId, &'static str> {
        let newest = self
            .timeline
            .lines(room)
            .rev()
            .filter(|line| line.sender.canonical() == self.me.canonical())
            .find_map(|line| match &line.kind {
                LineKind::Message {
                    id,
                    deleted: false,
                    media,
                    ..
                } => Some((*id, media.is_some())),
                _ => None,
            });
        match newest {
            Some((id, false)) => Ok(id),
            Some((_, true)) => Err("your last message here is a file: it cannot be edited"),
            None => Err("none of your messages here can be edited"),
        }
    }

    /// What `/delete [N]` deletes in `room`: file N of `/files` if it is the user's,
    /// else the user's newest message there that is not deleted yet.
    fn deletable(&self, room: RoomId, number: Option<usize>) -> Result<Effect, String> {
        let mine = |line: &TimelineLine| line.sender.canonical() == self.me.canonical();
        let found = match number {
            Some(wanted) => {
                let Some((line, _)) = self.files(room).nth(wanted.saturating_sub(1)) else {
                    let count = self.files(room).count();
                    return Err(if count == 0 {
                        no_files(self.timeline.is_complete(room))
                    } else {
                        format!("there is no file {wanted}: /files lists {count}")
                    });
                };
                if !mine(line) {
                    return Err(format!(
                        "file {wanted} was sent by {}: only its sender can delete it",
                        line.sender
                    ));
                }
                line
            }
            None => self
                .timeline
                .lines(room)
                .rev()
                .find(|line| {
                    mine(line) && matches!(line.kind, LineKind::Message { deleted: false, .. })
                })
                .ok_or_else(|| "none of your messages here can be deleted".to_owned())?,
        };
        let LineKind::Message { id, media, .. } = &found.kind else {
            return Err("that line is not a message".to_owned());
        };
        Ok(Effect::Delete {
            room,
            target: *id,
            file: media.as_deref().map(|media| Box::new(media.file().clone())),
        })
    }

    /// The files and voice messages loaded in `room` and not deleted, newest first
    /// (what `/files` numbers).
    fn files(&self, room: RoomId) -> impl Iterator<Item = (&TimelineLine, &FilePointer)> + '_ {
        self.timeline
            .lines(room)
            .rev()
            .filter_map(|line| match &line.kind {
                LineKind::Message {
                    media: Some(media),
                    deleted: false,
                    ..
                } => match media.as_ref() {
                    Media::File(pointer) => Some((line, pointer)),
                    Media::Voice(voice) => Some((line, &voice.file)),
                    _ => None,
                },
                _ => None,
            })
    }

    fn moderate(&mut self, action: Moderation, user: UserName) -> Vec<Effect> {
        match self.current_room() {
            Ok((room, tag)) => vec![Effect::Moderate {
                action,
                room,
                tag,
                user,
            }],
            Err(err) => self.fail(&err),
        }
    }

    /// The current room if the user is a member, with its tag.
    fn current_room(&self) -> Result<(RoomId, String), String> {
        match self.current() {
            Some(room) if room.is_joined() => Ok((room.id(), place_of(&room.info).tag())),
            Some(room) => Err(format!(
                "you are not a member of {}",
                place_of(&room.info).tag()
            )),
            None => Err("no conversation is open".to_owned()),
        }
    }

    fn send(&mut self, pending: PendingTarget, target: Target, text: String) -> Vec<Effect> {
        let id = self.next_pending;
        self.next_pending += 1;
        self.pending.push(PendingMessage {
            id,
            target: pending,
            text: text.clone(),
            acked: None,
        });
        self.scroll = 0;
        vec![Effect::Send {
            pending: id,
            target,
            text,
        }]
    }

    /// Opens a room: selects it, scrolls to the newest line, and fetches what it needs.
    fn enter(&mut self, room: RoomId) -> Vec<Effect> {
        if !self.rooms.select(room) {
            return Vec::new();
        }
        self.scroll = 0;
        self.load(room)
    }

    /// Fetches the room's members if unknown, and history if it shows little.
    fn load(&mut self, room: RoomId) -> Vec<Effect> {
        let mut effects = Vec::new();
        if !self.rooms.get(room).is_some_and(RoomSummary::is_joined) {
            return effects;
        }
        if !self.presence.is_known(room) && self.members_in_flight.insert(room) {
            effects.push(Effect::Members { room });
        }
        if self.timeline.len(room) < HISTORY_PAGE as usize {
            effects.extend(self.older_history(room));
        }
        effects
    }

    fn older_history(&mut self, room: RoomId) -> Option<Effect> {
        if self.timeline.is_complete(room)
            || self.timeline.is_full(room)
            || !self.history_in_flight.insert(room)
        {
            return None;
        }
        Some(Effect::History {
            room,
            before: self.timeline.oldest_seq(room),
            limit: HISTORY_PAGE,
        })
    }

    fn page(&self) -> usize {
        let (_, height) = view::conversation_viewport(self.size);
        usize::from(height).saturating_sub(1).max(1)
    }

    fn page_up(&mut self) -> Vec<Effect> {
        let Some(room) = self
            .current()
            .filter(|room| room.is_joined())
            .map(RoomSummary::id)
        else {
            return Vec::new();
        };
        let (width, height) = view::conversation_viewport(self.size);
        let top = view::total_rows(self, room, width).saturating_sub(usize::from(height));
        self.scroll = (self.scroll + self.page()).min(top);
        if self.scroll >= top {
            return self.older_history(room).into_iter().collect();
        }
        Vec::new()
    }

    fn set_status(&mut self, level: Level, text: String) {
        self.status = Some(Status { text, level });
    }

    fn fail(&mut self, text: &str) -> Vec<Effect> {
        self.set_status(Level::Error, text.to_owned());
        Vec::new()
    }
}

/// What `/files` and `/save` say when a conversation shows no file.
fn no_files(complete: bool) -> String {
    if complete {
        "no files in this conversation".to_owned()
    } else {
        "no files loaded here (PageUp loads older messages)".to_owned()
    }
}

#[cfg(test)]
mod tests;
