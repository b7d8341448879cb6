//! The chat screen: rooms on the left with unread counts, the conversation in the
//! middle (timestamps, names, day separators, join and leave notices, who is typing),
//! the room's people on the right (click one for a private conversation), the input at
//! the bottom (Enter sends, Shift+Enter makes a new line, `:shortcode:` becomes emoji),
//! and a top bar with the connection's state and a Disconnect button. Files (the file
//! button, or dropped on the window) and voice messages are sent from beside the input
//! and shown in the conversation ([`files`], [`media`], [`voice`]); each room has live
//! voice toggles under its title.
//!
//! The screen keeps the client core's view models and forwards everything the user
//! does to the [`ClientHandle`]; answers come back as [`Outcome`]s.

mod files;
mod media;
mod voice;

use crate::app::Update;
use crate::audio::Audio;
use crate::bridge::Bridge;
use crate::browser::FileBrowser;
use crate::emoji;
use crate::picker::EmojiPicker;
use crate::start::Connected;
use crate::transfers::Transfers;
use chrono::{Local, NaiveDate, TimeZone as _};
use confide_client::model::{
    LineKind, Presence, Receipt, RoomList, Row, Timeline, TimelineLine, Typing,
};
use confide_client::{
    ClientEvent, ClientHandle, ConnectionState, HistoryPage, Protection, SentAck, Verification,
};
use confide_crypto::payload::{FilePointer, MessageId};
use confide_proto::{
    MemberInfo, RoomEncryption, RoomId, RoomInfo, RoomName, Target, Timestamp, UserName,
};
use media::{MediaAction, MediaView};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

/// Entries fetched when a room is opened.
const HISTORY_PAGE: u32 = 100;

/// Suggestions shown for a started `:shortcode`.
const SUGGESTIONS: usize = 6;

/// The reactions offered in a message's menu.
const QUICK_REACTIONS: [&str; 6] = ["👍", "❤\u{fe0f}", "😂", "🎉", "😮", "😢"];

/// Search results shown at most.
const SEARCH_RESULTS: usize = 50;

/// Entries exported at most (the newest).
const EXPORT_MAX: usize = 100_000;

/// Characters of a message quoted above a reply.
const QUOTE_CHARS: usize = 60;

/// What the user asked of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LineAction {
    React {
        target: MessageId,
        emoji: String,
        add: bool,
    },
    Reply {
        target: MessageId,
        quote: String,
    },
    Edit {
        target: MessageId,
        text: String,
    },
    /// Delete one of the user's messages, and the file it carries from the server.
    Delete {
        target: MessageId,
        file: Option<Box<FilePointer>>,
    },
    /// Save a file, or play or stop a voice message.
    Media(MediaAction),
}

/// What the input is for besides a new message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Composing {
    Reply { target: MessageId, quote: String },
    Edit { target: MessageId },
}

/// The answer to a request the screen made.
pub enum Outcome {
    /// A message was stored (or not).
    Sent {
        /// The room it was for.
        room: RoomId,
        /// What was sent, to give back on failure.
        text: String,
        /// The acknowledgement or the error.
        result: Result<SentAck, String>,
    },
    /// A page of history.
    History {
        /// The room.
        room: RoomId,
        /// Older than what was shown (the user asked for more).
        older: bool,
        /// The page or the error.
        result: Result<HistoryPage, String>,
    },
    /// A room's members.
    Members {
        /// The room.
        room: RoomId,
        /// The list or the error.
        result: Result<Vec<MemberInfo>, String>,
    },
    /// A room was joined, created or opened (a direct conversation).
    Entered(Result<RoomInfo, String>),
    /// Search results, newest first.
    Found(Result<Vec<confide_client::Entry>, String>),
    /// Someone's safety number, for the verify dialog.
    Verification {
        /// Whose.
        user: UserName,
        /// The safety number or the error.
        result: Result<Verification, String>,
    },
    /// Something without an answer finished; the text says what.
    Done(Result<String, String>),
    /// An upload or download finished: what to say, or why it failed.
    Transfer {
        /// The transfer's id in the transfers area.
        id: u64,
        /// The outcome, for people.
        result: Result<String, String>,
    },
    /// A voice message was fetched for playing.
    VoiceFetched {
        /// The message.
        id: MessageId,
        /// Its Ogg Opus bytes, or why they could not be fetched.
        result: Result<Vec<u8>, String>,
    },
}

/// A dialog over the conversation.
#[derive(Debug, Clone)]
enum Dialog {
    Create {
        name: String,
        private: bool,
    },
    Join {
        name: String,
    },
    Invite {
        room: RoomId,
        user: String,
    },
    /// Searching the open room's history.
    Search {
        room: RoomId,
        query: String,
        /// (when, who, text) of each result; `None` before a search.
        results: Option<Vec<(Timestamp, UserName, String)>>,
    },
    /// Exporting the open room as a text log.
    Export {
        room: RoomId,
        title: String,
        path: String,
    },
    /// Comparing safety numbers with someone (`None` while it loads).
    Verify {
        user: UserName,
        verification: Option<Verification>,
    },
}

/// The chat screen's state.
pub struct ChatScreen {
    client: ClientHandle,
    me: UserName,
    server: String,
    rooms: RoomList,
    timeline: Timeline,
    presence: Presence,
    typing: Typing,
    connection: ConnectionState,
    syncing: bool,
    input: String,
    /// Messages sent and not yet acknowledged: (room, text).
    pending: Vec<(RoomId, String)>,
    status: Option<String>,
    alert: Option<String>,
    dialog: Option<Dialog>,
    loaded: HashSet<RoomId>,
    members_asked: HashSet<RoomId>,
    typing_in: Option<RoomId>,
    picker: EmojiPicker,
    /// Where the input's cursor was last (a character index), for the picker.
    cursor: usize,
    /// Replying to or editing a message, if so.
    composing: Option<Composing>,
    /// Rooms whose older history is being fetched.
    loading_older: HashSet<RoomId>,
    /// Put the input's cursor here and focus it on the next frame (after an edit began).
    place_cursor: Option<usize>,
    /// Per room, the newest message from others this user was shown (and said so).
    read_marked: std::collections::HashMap<RoomId, MessageId>,
    /// Sound: recording, playing, live voice.
    audio: Audio,
    voice: voice::VoiceState,
    /// Uploads and downloads.
    transfers: Transfers,
    /// The file browser, while choosing a file to send or where to save one.
    browsing: Option<(FileBrowser, files::Browse)>,
    /// A download waiting for permission to replace a file.
    replacing: Option<(PathBuf, confide_crypto::payload::FilePointer)>,
    /// The folder a file was last sent from.
    last_folder: Option<PathBuf>,
}

impl ChatScreen {
    /// The screen for a client that just logged in, in the lobby (or the first room),
    /// with the app's audio thread.
    #[must_use]
    pub fn new(connected: Connected, audio: Audio) -> ChatScreen {
        let mut rooms = RoomList::new(connected.me.clone());
        rooms.replace(connected.rooms);
        let first = rooms
            .lobby()
            .map(|room| room.id())
            .or_else(|| rooms.rooms().first().map(|room| room.id()));
        if let Some(room) = first {
            rooms.select(room);
        }
        ChatScreen {
            client: connected.client,
            me: connected.me,
            server: connected.server.to_string(),
            rooms,
            timeline: Timeline::new(),
            presence: Presence::new(),
            typing: Typing::new(),
            connection: ConnectionState::Connected,
            syncing: true,
            input: String::new(),
            pending: Vec::new(),
            status: None,
            alert: None,
            dialog: None,
            loaded: HashSet::new(),
            members_asked: HashSet::new(),
            typing_in: None,
            picker: EmojiPicker::new(&connected.profile_dir),
            cursor: 0,
            composing: None,
            place_cursor: None,
            loading_older: HashSet::new(),
            read_marked: std::collections::HashMap::new(),
            audio,
            voice: voice::VoiceState::default(),
            transfers: Transfers::new(),
            browsing: None,
            replacing: None,
            last_folder: None,
        }
    }

    /// The client (to close it).
    #[must_use]
    pub fn client(&self) -> &ClientHandle {
        &self.client
    }

    /// The rooms, as shown.
    #[must_use]
    pub fn rooms(&self) -> &RoomList {
        &self.rooms
    }

    /// The conversations, as shown.
    #[must_use]
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// The status line's text, if any.
    #[must_use]
    pub fn status(&self) -> Option<&str> {
        self.status.as_deref()
    }

    /// The connection's state, as shown.
    #[must_use]
    pub fn connection(&self) -> &ConnectionState {
        &self.connection
    }

    /// Closes the connection in the background (the Disconnect button).
    pub fn disconnect(&self, bridge: &Bridge<Update>) {
        self.audio.reset();
        let client = self.client.clone();
        bridge.spawn(async move {
            client.close().await;
            None
        });
    }

    /// An event from the client core.
    pub fn on_event(&mut self, event: ClientEvent) {
        self.rooms.apply(&event);
        self.timeline.apply(&event);
        self.presence.apply(&event);
        self.typing.apply(&event, Instant::now());
        match event {
            ClientEvent::Connection(state) => {
                if state == ConnectionState::Connected {
                    self.syncing = true;
                    // Presence is not replayed: ask again for the rooms shown.
                    self.members_asked.clear();
                    self.voice.reconnected();
                }
                self.connection = state;
            }
            ClientEvent::SyncComplete => self.syncing = false,
            ClientEvent::Warning(text) => self.status = Some(text),
            ClientEvent::IdentityChanged {
                user,
                key_changed,
                was_verified,
            } => {
                let text = if key_changed && was_verified {
                    format!(
                        "{user}'s identity key changed, and you had verified them. Compare \
                         safety numbers again before trusting their messages."
                    )
                } else if key_changed {
                    format!("{user}'s identity key changed (a new installation?)")
                } else {
                    format!("{user}'s list of devices changed")
                };
                if key_changed && was_verified {
                    self.alert = Some(text);
                } else {
                    self.status = Some(text);
                }
            }
            _ => {}
        }
    }

    /// The answer to a request.
    pub fn on_outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Sent { room, text, result } => {
                if let Some(at) = self
                    .pending
                    .iter()
                    .position(|(r, t)| *r == room && *t == text)
                {
                    self.pending.remove(at);
                }
                if let Err(err) = result {
                    self.status = Some(format!("not sent: {err}"));
                    if self.input.is_empty() {
                        self.input = text;
                    }
                }
            }
            Outcome::History {
                room,
                older,
                result,
            } => {
                self.loading_older.remove(&room);
                match result {
                    Ok(page) => {
                        self.timeline.load_history(&page.entries);
                        if !page.more {
                            self.timeline.mark_complete(room);
                        }
                    }
                    Err(err) => {
                        if !older {
                            self.loaded.remove(&room);
                        }
                        self.status = Some(format!("cannot load the history: {err}"));
                    }
                }
            }
            Outcome::Members { room, result } => match result {
                Ok(members) => self.presence.seed(room, &members),
                Err(err) => {
                    self.members_asked.remove(&room);
                    self.status = Some(format!("cannot list the members: {err}"));
                }
            },
            Outcome::Entered(result) => match result {
                Ok(info) => {
                    let id = info.id;
                    self.rooms.insert(info);
                    self.rooms.select(id);
                }
                Err(err) => self.status = Some(err),
            },
            Outcome::Done(result) => match result {
                Ok(text) | Err(text) => self.status = Some(text),
            },
            Outcome::Transfer { id, result } => self.transfers.finish(id, result),
            Outcome::VoiceFetched { id, result } => self.on_voice_fetched(id, result),
            Outcome::Found(result) => match result {
                Ok(entries) => {
                    if let Some(Dialog::Search { results, .. }) = &mut self.dialog {
                        *results = Some(
                            entries
                                .iter()
                                .map(|e| {
                                    (
                                        e.timestamp,
                                        e.sender.clone(),
                                        e.text().unwrap_or("").to_owned(),
                                    )
                                })
                                .collect(),
                        );
                    }
                }
                Err(err) => self.status = Some(format!("search failed: {err}")),
            },
            Outcome::Verification { user, result } => match result {
                Ok(verification) => {
                    if let Some(Dialog::Verify {
                        user: shown,
                        verification: slot,
                    }) = &mut self.dialog
                        && shown.canonical() == user.canonical()
                    {
                        *slot = Some(verification);
                    }
                }
                Err(err) => {
                    self.dialog = None;
                    self.status = Some(format!("cannot verify {user}: {err}"));
                }
            },
        }
    }

    /// Opens the verify dialog for `user` and fetches their safety number.
    fn verify(&mut self, user: UserName, bridge: &Bridge<Update>) {
        self.dialog = Some(Dialog::Verify {
            user: user.clone(),
            verification: None,
        });
        let client = self.client.clone();
        bridge.spawn(async move {
            let result = client.verification(&user).await.map_err(|e| e.to_string());
            Some(Update::Outcome(Outcome::Verification { user, result }))
        });
    }

    /// Draws the screen. Returns `true` when the user asked to disconnect.
    pub fn show(&mut self, ui: &mut egui::Ui, bridge: &Bridge<Update>) -> bool {
        let now = Instant::now();
        if self.typing.expire(now) || !self.typing.is_empty() {
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_secs(1));
        }
        self.load_current(bridge);
        self.relisten(bridge);
        self.take_dropped_files(ui, bridge);
        let mut disconnect = false;
        egui::Panel::top("top bar").show(ui, |ui| {
            disconnect = self.top_bar(ui);
        });
        egui::Panel::left("rooms")
            .resizable(true)
            .default_size(180.0)
            .show(ui, |ui| self.room_list(ui));
        egui::Panel::right("people")
            .resizable(true)
            .default_size(160.0)
            .show(ui, |ui| self.people(ui, bridge));
        egui::Panel::bottom("input").show(ui, |ui| self.input_area(ui, bridge));
        egui::CentralPanel::default().show(ui, |ui| self.conversation(ui, bridge, now));
        self.dialogs(ui, bridge);
        self.browser_ui(ui.ctx(), bridge);
        self.replace_ui(ui.ctx(), bridge);
        disconnect
    }

    /// Fetches the history and members of the open room once.
    fn load_current(&mut self, bridge: &Bridge<Update>) {
        let Some(room) = self.rooms.selected() else {
            return;
        };
        if !room.is_joined() {
            return;
        }
        let id = room.id();
        if self.loaded.insert(id) {
            let client = self.client.clone();
            bridge.spawn(async move {
                let result = client
                    .history(id, None, HISTORY_PAGE)
                    .await
                    .map_err(|e| e.to_string());
                Some(Update::Outcome(Outcome::History {
                    room: id,
                    older: false,
                    result,
                }))
            });
        }
        if !self.presence.is_known(id) && self.members_asked.insert(id) {
            let client = self.client.clone();
            bridge.spawn(async move {
                let result = client.members(id).await.map_err(|e| e.to_string());
                Some(Update::Outcome(Outcome::Members { room: id, result }))
            });
        }
    }

    fn top_bar(&mut self, ui: &mut egui::Ui) -> bool {
        let mut disconnect = false;
        ui.horizontal(|ui| {
            let (text, color) = match &self.connection {
                ConnectionState::Connected if self.syncing => {
                    ("Catching up".to_owned(), egui::Color32::YELLOW)
                }
                ConnectionState::Connected => ("Connected".to_owned(), egui::Color32::GREEN),
                ConnectionState::Reconnecting { attempt, .. } => (
                    format!("Reconnecting (attempt {attempt})"),
                    egui::Color32::YELLOW,
                ),
                ConnectionState::Disconnected { reason } => {
                    (format!("Disconnected: {reason}"), egui::Color32::RED)
                }
                _ => ("Connection changed".to_owned(), egui::Color32::YELLOW),
            };
            ui.colored_label(color, text);
            ui.label(format!("{} on {}", self.me, self.server));
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui.button("Disconnect").clicked() {
                    disconnect = true;
                }
            });
        });
        if let Some(alert) = self.alert.clone() {
            ui.horizontal(|ui| {
                ui.colored_label(ui.visuals().error_fg_color, format!("⚠ {alert}"));
                if ui.button("Dismiss").clicked() {
                    self.alert = None;
                }
            });
        }
        disconnect
    }

    fn room_list(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.strong("Rooms");
            if ui.small_button("New").clicked() {
                self.dialog = Some(Dialog::Create {
                    name: String::new(),
                    private: false,
                });
            }
            if ui.small_button("Join").clicked() {
                self.dialog = Some(Dialog::Join {
                    name: String::new(),
                });
            }
        });
        ui.separator();
        let mut chosen = None;
        egui::ScrollArea::vertical().show(ui, |ui| {
            for room in self.rooms.rooms() {
                let mut label = room.label();
                if room.is_invitation() {
                    label.push_str(" (invited)");
                }
                if room.unread > 0 {
                    label = format!("{label}  ({})", room.unread);
                }
                let selected = self.rooms.selected_id() == Some(room.id());
                if ui.selectable_label(selected, label).clicked() {
                    chosen = Some(room.id());
                }
            }
        });
        if let Some(room) = chosen {
            self.select(room);
        }
    }

    fn select(&mut self, room: RoomId) {
        if self.rooms.selected_id() != Some(room) {
            self.rooms.select(room);
        }
    }

    fn people(&mut self, ui: &mut egui::Ui, bridge: &Bridge<Update>) {
        ui.strong("People");
        ui.separator();
        let Some(room) = self.rooms.selected_id() else {
            return;
        };
        let mut open = None;
        let mut verify = None;
        egui::ScrollArea::vertical().show(ui, |ui| {
            let mut members: Vec<_> = self.presence.members(room).collect();
            members.sort_by_key(|m| (!m.online, m.user.canonical()));
            for member in members {
                let owner = if member.owner { " (owner)" } else { "" };
                let mut text = egui::RichText::new(format!("{}{owner}", member.user));
                text = if member.online {
                    text.color(egui::Color32::GREEN)
                } else {
                    text.weak()
                };
                let response = ui.selectable_label(false, text);
                if member.user.canonical() == self.me.canonical() {
                    continue;
                }
                if response.clicked() {
                    open = Some(member.user.clone());
                }
                response
                    .on_hover_text("Click for a private conversation; right-click to verify")
                    .context_menu(|ui| {
                        if ui.button("Private conversation").clicked() {
                            open = Some(member.user.clone());
                        }
                        if ui.button("Verify safety number").clicked() {
                            verify = Some(member.user.clone());
                        }
                    });
            }
        });
        if let Some(peer) = open {
            self.open_direct(peer, bridge);
        }
        if let Some(user) = verify {
            self.verify(user, bridge);
        }
    }

    /// Opens the private conversation with `peer` (created on the server if needed).
    fn open_direct(&mut self, peer: UserName, bridge: &Bridge<Update>) {
        if let Some(room) = self.rooms.find_direct(&peer).map(|room| room.id()) {
            self.select(room);
            return;
        }
        self.spawn_entered(bridge, move |client| async move {
            client.open_direct(&peer).await
        });
    }

    /// The open room's buttons, right to left: Leave, Invite, Export, Search, Verify.
    fn room_buttons(
        &mut self,
        ui: &mut egui::Ui,
        room: &confide_client::model::RoomSummary,
        bridge: &Bridge<Update>,
    ) {
        if !room.is_direct() && !room.is_lobby() && ui.button("Leave").clicked() {
            let client = self.client.clone();
            let (id, label) = (room.id(), room.label());
            bridge.spawn(async move {
                let result = client
                    .leave(id)
                    .await
                    .map(|()| format!("left {label}"))
                    .map_err(|e| e.to_string());
                Some(Update::Outcome(Outcome::Done(result)))
            });
        }
        if !room.is_direct() && ui.button("Invite…").clicked() {
            self.dialog = Some(Dialog::Invite {
                room: room.id(),
                user: String::new(),
            });
        }
        if ui.button("Export…").clicked() {
            let home = directories::UserDirs::new()
                .map(|dirs| dirs.home_dir().to_path_buf())
                .unwrap_or_default();
            let path = home.join(crate::export::file_name(&room.label()));
            self.dialog = Some(Dialog::Export {
                room: room.id(),
                title: room.label(),
                path: path.display().to_string(),
            });
        }
        if ui.button("Search").clicked() {
            self.dialog = Some(Dialog::Search {
                room: room.id(),
                query: String::new(),
                results: None,
            });
        }
        if let Some(peer) = room.peer().cloned()
            && ui.button("Verify…").clicked()
        {
            self.verify(peer, bridge);
        }
    }

    /// Runs a request that ends in a room to open.
    fn spawn_entered<F, Fut>(&self, bridge: &Bridge<Update>, request: F)
    where
        F: FnOnce(ClientHandle) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<RoomInfo, confide_client::ClientError>> + Send,
    {
        let client = self.client.clone();
        bridge.spawn(async move {
            let result = request(client).await.map_err(|e| e.to_string());
            Some(Update::Outcome(Outcome::Entered(result)))
        });
    }

    fn conversation(&mut self, ui: &mut egui::Ui, bridge: &Bridge<Update>, now: Instant) {
        let Some(room) = self.rooms.selected().cloned() else {
            ui.label("No conversation yet: create or join a room.");
            return;
        };
        ui.horizontal(|ui| {
            ui.heading(room.label());
            match &room.info.encryption {
                RoomEncryption::SharedKey { .. } => {
                    ui.colored_label(
                        egui::Color32::from_rgb(230, 160, 40),
                        "⚠ shared key (weaker than MLS)",
                    )
                    .on_hover_text(
                        "Everyone who has the room's key or passphrase can read it, and \
                         there is no forward secrecy.",
                    );
                }
                _ => {
                    ui.label("🔒 end-to-end encrypted (MLS)");
                }
            }
            if room.is_joined() {
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    self.room_buttons(ui, &room, bridge);
                });
            }
        });
        if room.is_joined() {
            self.voice_bar(ui, room.id(), bridge);
        }
        if room.is_invitation() {
            ui.label("You are invited to this room.");
            if ui.button("Accept the invitation").clicked()
                && let Some(name) = room.info.name.clone()
            {
                self.spawn_entered(bridge, move |client| async move { client.join(name).await });
            }
            return;
        }
        ui.separator();
        let typing_line = self.typing.describe(room.id(), now);
        let rows = self.timeline.rows(room.id(), local_day);
        let mut action = None;
        let mut load_older = false;
        let more = !self.timeline.is_complete(room.id()) && !self.timeline.is_full(room.id());
        let loading = self.loading_older.contains(&room.id());
        let view = MediaView {
            speaker: self.audio.speaker(),
            playback: self.voice.playback.as_ref(),
        };
        egui::ScrollArea::vertical()
            .stick_to_bottom(true)
            .auto_shrink([false, false])
            .show(ui, |ui| {
                if more && self.loaded.contains(&room.id()) {
                    ui.vertical_centered(|ui| {
                        if loading {
                            ui.spinner();
                        } else if ui.button("Load older messages").clicked() {
                            load_older = true;
                        }
                    });
                }
                for row in rows {
                    match row {
                        Row::Day(day) => {
                            ui.vertical_centered(|ui| {
                                ui.weak(day.format("%A %-d %B %Y").to_string());
                            });
                        }
                        Row::Line(line) => {
                            if let Some(asked) =
                                line_ui(ui, line, &self.me, &self.timeline, room.id(), &view)
                            {
                                action = Some(asked);
                            }
                        }
                    }
                }
                for (_, text) in self.pending.iter().filter(|(r, _)| *r == room.id()) {
                    ui.weak(format!("[sending] {}: {text}", self.me));
                }
            });
        if let Some(typing) = typing_line {
            ui.weak(egui::RichText::new(typing).italics());
        }
        if let Some(action) = action {
            self.on_line_action(room.id(), action, bridge);
        }
        if load_older {
            self.load_older(room.id(), bridge);
        }
        self.mark_read(room.id(), bridge);
    }

    /// Fetches the page of history before the oldest line shown.
    fn load_older(&mut self, room: RoomId, bridge: &Bridge<Update>) {
        let Some(before) = self.timeline.oldest_seq(room) else {
            return;
        };
        if !self.loading_older.insert(room) {
            return;
        }
        let client = self.client.clone();
        bridge.spawn(async move {
            let result = client
                .history(room, Some(before), HISTORY_PAGE)
                .await
                .map_err(|e| e.to_string());
            Some(Update::Outcome(Outcome::History {
                room,
                older: true,
                result,
            }))
        });
    }

    /// The conversation is on screen: tell the others up to where it was read (the
    /// core sends receipts only in small rooms, once per message).
    fn mark_read(&mut self, room: RoomId, bridge: &Bridge<Update>) {
        let Some(newest) = self
            .timeline
            .newest_from_others(room, &self.me)
            .and_then(TimelineLine::message_id)
        else {
            return;
        };
        if self.read_marked.get(&room) == Some(&newest) {
            return;
        }
        self.read_marked.insert(room, newest);
        let client = self.client.clone();
        bridge.spawn(async move {
            if let Err(err) = client.mark_read(room, newest).await {
                tracing::debug!(cause = %err, "cannot send a read receipt");
            }
            None
        });
    }

    /// Reacts at once; replying and editing go through the input.
    fn on_line_action(&mut self, room: RoomId, action: LineAction, bridge: &Bridge<Update>) {
        match action {
            LineAction::React { target, emoji, add } => {
                let client = self.client.clone();
                bridge.spawn(async move {
                    match client.react(room, target, &emoji, add).await {
                        Ok(_) => None,
                        Err(err) => Some(Update::Outcome(Outcome::Done(Err(format!(
                            "reaction not sent: {err}"
                        ))))),
                    }
                });
            }
            LineAction::Reply { target, quote } => {
                self.composing = Some(Composing::Reply { target, quote });
            }
            LineAction::Edit { target, text } => {
                self.composing = Some(Composing::Edit { target });
                self.input = text;
                self.cursor = self.input.chars().count();
                self.place_cursor = Some(self.cursor);
            }
            LineAction::Media(action) => self.on_media_action(action, bridge),
            LineAction::Delete { target, file } => {
                let client = self.client.clone();
                bridge.spawn(async move {
                    let result = match client.delete(room, target).await {
                        Err(e) => Err(format!("not deleted: {e}")),
                        Ok(_) => match file {
                            None => Ok("message deleted".to_owned()),
                            // The message first, so that nobody is offered a file that
                            // is gone.
                            Some(file) => match client.delete_blob(&file).await {
                                Ok(_) => Ok("message and file deleted".to_owned()),
                                Err(e) => Err(format!(
                                    "message deleted, but the file stays on the server: {e}"
                                )),
                            },
                        },
                    };
                    Some(Update::Outcome(Outcome::Done(result)))
                });
            }
        }
    }

    fn input_area(&mut self, ui: &mut egui::Ui, bridge: &Bridge<Update>) {
        self.transfers.show(ui);
        if let Some(status) = &self.status {
            ui.horizontal(|ui| {
                ui.colored_label(ui.visuals().warn_fg_color, status.as_str());
            });
        }
        let Some(room) = self
            .rooms
            .selected()
            .filter(|r| r.is_joined())
            .map(|r| r.id())
        else {
            return;
        };
        let id = egui::Id::unique("message input");
        if let Some(composing) = self.composing.clone() {
            ui.horizontal(|ui| {
                match &composing {
                    Composing::Reply { quote, .. } => ui.weak(format!("Replying to {quote}")),
                    Composing::Edit { .. } => ui.weak("Editing your message"),
                };
                if ui.small_button("Cancel").clicked() {
                    if matches!(composing, Composing::Edit { .. }) {
                        self.input.clear();
                    }
                    self.composing = None;
                }
            });
        }
        let mut picked = None;
        ui.horizontal(|ui| {
            if ui
                .selectable_label(self.picker.open, "😀 Emoji")
                .on_hover_text("Pick an emoji")
                .clicked()
            {
                self.picker.open = !self.picker.open;
            }
            if ui
                .button("📎 File…")
                .on_hover_text("Send a file (or drop files on the window)")
                .clicked()
            {
                self.choose_file(room);
            }
            self.record_controls(ui, room);
        });
        if let Some(emoji) = self.picker.show(ui.ctx()) {
            picked = Some(emoji);
        }
        // Enter alone sends; Shift+Enter is left to the text box (a new line). egui's
        // consume_key ignores Shift, so the plain key press is taken out by hand.
        let focused = ui.ctx().memory(|m| m.has_focus(id));
        let send = focused
            && ui.input_mut(|input| {
                let before = input.events.len();
                input.events.retain(|event| {
                    !matches!(
                        event,
                        egui::Event::Key {
                            key: egui::Key::Enter,
                            pressed: true,
                            modifiers,
                            ..
                        } if modifiers.is_none()
                    )
                });
                input.events.len() != before
            });
        if let Some(at) = self.place_cursor.take() {
            set_cursor(ui.ctx(), id, at);
            ui.ctx().memory_mut(|m| m.request_focus(id));
        }
        let before = self.input.clone();
        let label = ui.label("Message");
        let output = egui::TextEdit::multiline(&mut self.input)
            .id(id)
            .desired_rows(2)
            .desired_width(f32::INFINITY)
            .hint_text("Write a message (Enter sends, Shift+Enter for a new line)")
            .show(ui);
        output.response.response.labelled_by(label.id);
        let mut cursor = output
            .cursor_range
            .map_or(self.cursor.min(self.input.chars().count()), |range| {
                range.primary.index.0
            });
        if let Some(emoji) = picked {
            let done = emoji::insert(&self.input, cursor, &emoji);
            self.input = done.text;
            cursor = done.cursor;
            set_cursor(ui.ctx(), id, cursor);
            ui.ctx().memory_mut(|m| m.request_focus(id));
        }
        self.cursor = cursor;
        if self.input != before {
            if let Some(replaced) = emoji::replace_shortcodes(&self.input, cursor) {
                self.input = replaced.text;
                set_cursor(ui.ctx(), id, replaced.cursor);
            }
            self.typing_changed(room, bridge);
        }
        self.suggestions(ui, id, cursor);
        if send {
            self.send(room, bridge);
        }
    }

    /// Suggestions under the input for a `:shortcode` being typed; a click completes it.
    fn suggestions(&mut self, ui: &mut egui::Ui, id: egui::Id, cursor: usize) {
        let Some(started) = emoji::started_shortcode(&self.input, cursor) else {
            return;
        };
        let found = emoji::suggestions(&started.fragment, SUGGESTIONS);
        if found.is_empty() {
            return;
        }
        ui.horizontal_wrapped(|ui| {
            for (code, emoji) in found {
                if ui.button(format!("{} :{code}:", emoji.as_str())).clicked() {
                    let done = emoji::complete(&self.input, &started, cursor, emoji.as_str());
                    self.input = done.text;
                    set_cursor(ui.ctx(), id, done.cursor);
                    ui.ctx().memory_mut(|m| m.request_focus(id));
                }
            }
        });
    }

    /// Tells the room whether this user is writing a message (the core throttles).
    fn typing_changed(&mut self, room: RoomId, bridge: &Bridge<Update>) {
        let composing = !self.input.trim().is_empty();
        let mut notices = Vec::new();
        if let Some(before) = self.typing_in
            && (before != room || !composing)
        {
            notices.push((before, false));
        }
        if composing {
            notices.push((room, true));
        }
        self.typing_in = composing.then_some(room);
        for (room, active) in notices {
            let client = self.client.clone();
            bridge.spawn(async move {
                if let Err(err) = client.typing(room, active).await {
                    tracing::debug!(cause = %err, "cannot send a typing notice");
                }
                None
            });
        }
    }

    fn send(&mut self, room: RoomId, bridge: &Bridge<Update>) {
        let text = self.input.trim_end().to_owned();
        if text.trim().is_empty() {
            return;
        }
        self.input.clear();
        self.typing_in = None;
        self.status = None;
        let composing = self.composing.take();
        if !matches!(composing, Some(Composing::Edit { .. })) {
            self.pending.push((room, text.clone()));
        }
        let client = self.client.clone();
        bridge.spawn(async move {
            let result = match composing {
                None => client.send_text(Target::Room(room), &text).await,
                Some(Composing::Reply { target, .. }) => client.reply(room, target, &text).await,
                Some(Composing::Edit { target }) => client.edit(room, target, &text).await,
            }
            .map_err(|e| e.to_string());
            Some(Update::Outcome(Outcome::Sent { room, text, result }))
        });
    }

    fn dialogs(&mut self, ui: &mut egui::Ui, bridge: &Bridge<Update>) {
        let Some(mut dialog) = self.dialog.clone() else {
            return;
        };
        let mut close = false;
        let mut submit = false;
        egui::Modal::new(egui::Id::unique("room dialog")).show(ui.ctx(), |ui| {
            match &mut dialog {
                Dialog::Create { name, private } => {
                    ui.heading("New room");
                    let label = ui.label("Room name");
                    ui.text_edit_singleline(name).labelled_by(label.id);
                    ui.checkbox(private, "Private (by invitation only)");
                }
                Dialog::Join { name } => {
                    ui.heading("Join a room");
                    let label = ui.label("Room name");
                    ui.text_edit_singleline(name).labelled_by(label.id);
                }
                Dialog::Invite { user, .. } => {
                    ui.heading("Invite someone");
                    let label = ui.label("User name");
                    ui.text_edit_singleline(user).labelled_by(label.id);
                }
                Dialog::Search { query, results, .. } => {
                    ui.heading("Search this conversation");
                    let label = ui.label("Search for");
                    ui.text_edit_singleline(query).labelled_by(label.id);
                    if let Some(results) = results {
                        if results.is_empty() {
                            ui.weak("Nothing found.");
                        }
                        egui::ScrollArea::vertical()
                            .max_height(300.0)
                            .show(ui, |ui| {
                                for (at, who, text) in results.iter() {
                                    let when = local_time(*at).format("%Y-%m-%d %H:%M:%S");
                                    ui.label(format!("[{when}] {who}: {text}"));
                                }
                            });
                    }
                }
                Dialog::Export { title, path, .. } => {
                    ui.heading(format!("Export {title}"));
                    ui.label("Writes the conversation as a text log ([HH:MM:SS] name: text).");
                    let label = ui.label("Save to");
                    ui.text_edit_singleline(path).labelled_by(label.id);
                }
                Dialog::Verify { user, verification } => {
                    ui.heading(format!("Verify {user}"));
                    match verification {
                        None => {
                            ui.spinner();
                        }
                        Some(verification) => verify_ui(ui, &self.me, verification),
                    }
                }
            }
            ui.horizontal(|ui| match &dialog {
                Dialog::Verify {
                    verification: Some(v),
                    ..
                } => {
                    if !v.verified && ui.button("They match: mark as verified").clicked() {
                        submit = true;
                    }
                    if ui.button("Close").clicked() {
                        close = true;
                    }
                }
                Dialog::Verify { .. } => {
                    if ui.button("Close").clicked() {
                        close = true;
                    }
                }
                Dialog::Search { .. } => {
                    if ui.button("Search").clicked() {
                        submit = true;
                    }
                    if ui.button("Close").clicked() {
                        close = true;
                    }
                }
                _ => {
                    if ui.button("OK").clicked() {
                        submit = true;
                    }
                    if ui.button("Cancel").clicked() {
                        close = true;
                    }
                }
            });
        });
        if submit {
            match self.submit_dialog(&dialog, bridge) {
                // A search stays open to show its results.
                Ok(()) => close |= !matches!(dialog, Dialog::Search { .. }),
                Err(err) => self.status = Some(err),
            }
        }
        self.dialog = if close { None } else { Some(dialog) };
    }

    fn submit_dialog(&mut self, dialog: &Dialog, bridge: &Bridge<Update>) -> Result<(), String> {
        match dialog.clone() {
            Dialog::Create { name, private } => {
                let name: RoomName = name.trim().parse().map_err(|e| format!("{e}"))?;
                self.spawn_entered(bridge, move |client| async move {
                    client.create_room(name, private).await
                });
            }
            Dialog::Join { name } => {
                let name: RoomName = name.trim().parse().map_err(|e| format!("{e}"))?;
                self.spawn_entered(bridge, move |client| async move { client.join(name).await });
            }
            Dialog::Search { room, query, .. } => {
                let client = self.client.clone();
                bridge.spawn(async move {
                    let result = client
                        .search(room, &query, SEARCH_RESULTS)
                        .await
                        .map_err(|e| e.to_string());
                    Some(Update::Outcome(Outcome::Found(result)))
                });
            }
            Dialog::Export { room, title, path } => {
                let path = std::path::PathBuf::from(path.trim());
                if path.as_os_str().is_empty() {
                    return Err("choose a file to save to".to_owned());
                }
                let client = self.client.clone();
                bridge.spawn(async move {
                    let result = async {
                        let entries = client
                            .all_history(room, EXPORT_MAX)
                            .await
                            .map_err(|e| e.to_string())?;
                        let log = crate::export::text_log(room, &title, &entries, &Local);
                        tokio::fs::write(&path, log)
                            .await
                            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                        Ok(format!("exported {title} to {}", path.display()))
                    }
                    .await;
                    Some(Update::Outcome(Outcome::Done(result)))
                });
            }
            Dialog::Verify { user, .. } => {
                let client = self.client.clone();
                bridge.spawn(async move {
                    let result = client
                        .mark_verified(&user)
                        .await
                        .map(|_| format!("{user} is verified"))
                        .map_err(|e| e.to_string());
                    Some(Update::Outcome(Outcome::Done(result)))
                });
            }
            Dialog::Invite { room, user } => {
                let user = UserName::parse(user.trim()).map_err(|e| e.to_string())?;
                let client = self.client.clone();
                bridge.spawn(async move {
                    let result = client
                        .invite(room, user.clone())
                        .await
                        .map(|()| format!("invited {user}"))
                        .map_err(|e| e.to_string());
                    Some(Update::Outcome(Outcome::Done(result)))
                });
            }
        }
        Ok(())
    }
}

/// The safety number as 12 groups of digits in 3 rows, and the emoji sequence, with what
/// to do with them.
fn verify_ui(ui: &mut egui::Ui, me: &UserName, verification: &Verification) {
    let user = &verification.user;
    if verification.verified {
        ui.colored_label(egui::Color32::GREEN, format!("You verified {user}."));
    } else if verification.key_changed {
        ui.colored_label(
            ui.visuals().error_fg_color,
            format!("{user}'s identity key changed since you first saw it."),
        );
    }
    ui.label(format!(
        "Compare these with {user}, in person or on a call. They are the same on both \
         sides only if nobody is in between ({me} and {user} see the same numbers)."
    ));
    let groups = verification.safety_number.groups();
    for row in groups.chunks(4) {
        let line: Vec<String> = row.iter().map(|g| format!("{g:05}")).collect();
        ui.monospace(line.join(" "));
    }
    let emoji: Vec<String> = verification
        .safety_number
        .emoji_with_names()
        .into_iter()
        .map(|(emoji, name)| format!("{emoji} {name}"))
        .collect();
    ui.label(emoji.join("   "));
}

/// One line of a conversation: `[HH:MM:SS] name: text` with its reactions and a menu
/// (right-click) to react, reply, edit or delete; or a notice. Returns what was asked.
fn line_ui(
    ui: &mut egui::Ui,
    line: &TimelineLine,
    me: &UserName,
    timeline: &Timeline,
    room: RoomId,
    view: &MediaView<'_>,
) -> Option<LineAction> {
    let clock = local_time(line.timestamp).format("[%H:%M:%S]").to_string();
    let mut action = None;
    match &line.kind {
        LineKind::Message {
            text,
            protection,
            id,
            reply_to,
            edited,
            deleted,
            reactions,
            media,
            ..
        } => {
            if let Some(to) = reply_to {
                let quoted = timeline
                    .find(room, *to)
                    .map_or_else(|| "an earlier message".to_owned(), quote);
                ui.weak(format!("    in reply to {quoted}"));
            }
            let mine = line.sender.canonical() == me.canonical();
            ui.horizontal_wrapped(|ui| {
                ui.weak(clock);
                ui.strong(format!("{}:", line.sender));
                let body = if *deleted {
                    egui::RichText::new("message deleted").italics().weak()
                } else if let Some(media) = media.as_deref() {
                    egui::RichText::new(media::title(media)).strong()
                } else {
                    egui::RichText::new(text.as_str())
                };
                let response = ui.add(egui::Label::new(body).sense(egui::Sense::click()));
                if let Some(media) = media.as_deref()
                    && let Some(asked) = media::details(ui, *id, media, view)
                {
                    action = Some(LineAction::Media(asked));
                }
                if *edited && !*deleted {
                    ui.weak("(edited)");
                }
                if *protection == Protection::SharedKey {
                    ui.weak("(shared key)");
                }
                if mine && !*deleted {
                    let state = match timeline.receipt(room, line) {
                        Receipt::Sent => "sent",
                        Receipt::Delivered => "delivered",
                        Receipt::Read => "read",
                    };
                    ui.weak(state);
                }
                if !*deleted {
                    response.context_menu(|ui| {
                        ui.horizontal(|ui| {
                            for emoji in QUICK_REACTIONS {
                                if ui.button(emoji).clicked() {
                                    action = Some(LineAction::React {
                                        target: *id,
                                        emoji: emoji.to_owned(),
                                        add: true,
                                    });
                                    ui.close();
                                }
                            }
                        });
                        if ui.button("Reply").clicked() {
                            action = Some(LineAction::Reply {
                                target: *id,
                                quote: quote(line),
                            });
                            ui.close();
                        }
                        if mine && media.is_none() && ui.button("Edit").clicked() {
                            action = Some(LineAction::Edit {
                                target: *id,
                                text: text.clone(),
                            });
                            ui.close();
                        }
                        if mine && ui.button("Delete").clicked() {
                            let file = media.as_deref().map(|media| Box::new(media.file().clone()));
                            action = Some(LineAction::Delete { target: *id, file });
                            ui.close();
                        }
                    });
                }
            });
            if !reactions.is_empty() {
                ui.horizontal_wrapped(|ui| {
                    ui.add_space(24.0);
                    for reaction in reactions {
                        let reacted = reaction
                            .users
                            .iter()
                            .any(|u| u.canonical() == me.canonical());
                        let names: Vec<&str> =
                            reaction.users.iter().map(UserName::as_str).collect();
                        let label = format!("{} {}", reaction.emoji, reaction.users.len());
                        if ui
                            .selectable_label(reacted, label)
                            .on_hover_text(names.join(", "))
                            .clicked()
                        {
                            action = Some(LineAction::React {
                                target: *id,
                                emoji: reaction.emoji.clone(),
                                add: !reacted,
                            });
                        }
                    }
                });
            }
        }
        LineKind::Unreadable { reason } => {
            let text = format!("{clock} {}: ⚠ {reason}", line.sender);
            if reason.is_alert() {
                ui.colored_label(ui.visuals().error_fg_color, text);
            } else {
                ui.weak(text);
            }
        }
        LineKind::Member { user, change } => {
            ui.weak(
                egui::RichText::new(format!(
                    "{clock} {}",
                    confide_client::member_change(line.sender.as_str(), user.as_str(), *change)
                ))
                .italics(),
            );
        }
        // Key changes of the room's group are not conversation.
        LineKind::Commit { .. } => {}
        _ => {}
    }
    action
}

/// `bob: the first words…` of a message, for a reply.
fn quote(line: &TimelineLine) -> String {
    let text = match &line.kind {
        LineKind::Message { deleted: true, .. } => "a deleted message".to_owned(),
        LineKind::Message { text, .. } => {
            let mut short: String = text.chars().take(QUOTE_CHARS).collect();
            if text.chars().count() > QUOTE_CHARS {
                short.push_str("...");
            }
            short
        }
        _ => String::new(),
    };
    format!("{}: {text}", line.sender)
}

fn local_time(timestamp: Timestamp) -> chrono::DateTime<Local> {
    Local
        .timestamp_millis_opt(timestamp.0)
        .single()
        .unwrap_or_default()
}

fn local_day(timestamp: Timestamp) -> NaiveDate {
    local_time(timestamp).date_naive()
}

/// Moves the text box's cursor to a character index.
fn set_cursor(ctx: &egui::Context, id: egui::Id, index: usize) {
    if let Some(mut state) = egui::TextEdit::load_state(ctx, id) {
        let cursor = egui::text::CCursor::new(index);
        state
            .cursor
            .set_char_range(Some(egui::text::CCursorRange::one(cursor)));
        state.store(ctx, id);
    }
}
