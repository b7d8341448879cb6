//! The start screen: server, user name and password, then log in or create an account.
//!
//! A server met for the first time is probed for its certificate, whose fingerprint is
//! shown for the user to trust or not before anything is sent; a server whose
//! certificate changed since it was pinned gets a blocking warning with both
//! fingerprints. The last server and user are remembered in the profile.

use crate::app::Update;
use crate::audio::Audio;
use crate::bridge::Bridge;
use confide_client::{
    Auth, Client, ClientConfig, ClientError, ClientEvent, ClientHandle, Fingerprint, Profile,
    ServerAddress,
};
use confide_proto::{Password, RoomInfo, UserName};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long probing a server's certificate may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The file in the profile that remembers the last server and user.
const REMEMBERED: &str = "gui.json";

/// A client that logged in, handed to the chat screen.
pub struct Connected {
    /// The client.
    pub client: ClientHandle,
    /// Who logged in.
    pub me: UserName,
    /// Where.
    pub server: ServerAddress,
    /// The rooms at login.
    pub rooms: Vec<RoomInfo>,
    /// The profile directory.
    pub profile_dir: PathBuf,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Remembered {
    server: String,
    username: String,
}

/// What the screen is waiting for or asking.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// The form.
    Form,
    /// Probing or logging in.
    Busy(String),
    /// A new server: trust this certificate?
    Trust {
        server: ServerAddress,
        fingerprint: Fingerprint,
    },
    /// The pinned certificate changed.
    Changed {
        server: ServerAddress,
        pinned: Fingerprint,
        presented: Fingerprint,
    },
}

/// The start screen's state.
pub struct StartScreen {
    profile_dir: PathBuf,
    server: String,
    username: String,
    password: String,
    register: bool,
    step: Step,
    error: Option<String>,
    /// Where the connected client's live voice goes.
    audio: Audio,
}

impl StartScreen {
    /// The form, filled with what was remembered; `audio` will play the live voice of
    /// the client it connects.
    #[must_use]
    pub fn new(profile_dir: PathBuf, audio: Audio) -> StartScreen {
        let remembered = read_remembered(&profile_dir).unwrap_or_default();
        StartScreen {
            profile_dir,
            server: if remembered.server.is_empty() {
                "localhost:5555".to_owned()
            } else {
                remembered.server
            },
            username: remembered.username,
            password: String::new(),
            register: false,
            step: Step::Form,
            error: None,
            audio,
        }
    }

    /// Draws the screen; buttons start requests on `bridge`.
    pub fn show(&mut self, ui: &mut egui::Ui, bridge: &Bridge<Update>) {
        egui::CentralPanel::default().show(ui, |ui| {
            ui.vertical_centered(|ui| {
                ui.add_space(40.0);
                ui.heading("Confide");
                ui.label("End-to-end encrypted chat");
                ui.add_space(20.0);
            });
            let busy = !matches!(self.step, Step::Form);
            ui.add_enabled_ui(!busy, |ui| self.form(ui, bridge));
            if let Step::Busy(what) = &self.step {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(what.as_str());
                });
            }
            if let Some(error) = &self.error {
                ui.colored_label(ui.visuals().error_fg_color, error.as_str());
            }
        });
        self.prompts(ui, bridge);
    }

    fn form(&mut self, ui: &mut egui::Ui, bridge: &Bridge<Update>) {
        egui::Grid::new("start form")
            .num_columns(2)
            .spacing([12.0, 8.0])
            .show(ui, |ui| {
                let label = ui.label("Server");
                ui.add(egui::TextEdit::singleline(&mut self.server).hint_text("host:port"))
                    .labelled_by(label.id);
                ui.end_row();
                let label = ui.label("User name");
                ui.add(egui::TextEdit::singleline(&mut self.username))
                    .labelled_by(label.id);
                ui.end_row();
                let label = ui.label("Password");
                let password = ui
                    .add(egui::TextEdit::singleline(&mut self.password).password(true))
                    .labelled_by(label.id);
                ui.end_row();
                if password.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
                    self.submit(false, bridge);
                }
            });
        ui.add_space(8.0);
        ui.horizontal(|ui| {
            if ui.button("Log in").clicked() {
                self.submit(false, bridge);
            }
            if ui.button("Create account").clicked() {
                self.submit(true, bridge);
            }
        });
    }

    /// The trust prompt and the changed-certificate warning, as modal windows.
    fn prompts(&mut self, ui: &mut egui::Ui, bridge: &Bridge<Update>) {
        match self.step.clone() {
            Step::Trust {
                server,
                fingerprint,
            } => {
                let mut answer = None;
                egui::Modal::new(egui::Id::unique("trust server")).show(ui.ctx(), |ui| {
                    ui.heading("Trust this server?");
                    ui.label(format!(
                        "This is the first connection to {server}. Its certificate's \
                         fingerprint is:"
                    ));
                    ui.monospace(fingerprint.to_string());
                    ui.label(
                        "Compare it with the fingerprint the server's operator published \
                         (confide-server prints it when it starts). Trust it only if they \
                         match.",
                    );
                    ui.horizontal(|ui| {
                        if ui.button("Trust and connect").clicked() {
                            answer = Some(true);
                        }
                        if ui.button("Cancel").clicked() {
                            answer = Some(false);
                        }
                    });
                });
                match answer {
                    Some(true) => self.connect(server, Some(fingerprint), bridge),
                    Some(false) => self.step = Step::Form,
                    None => {}
                }
            }
            Step::Changed {
                server,
                pinned,
                presented,
            } => {
                let mut answer = None;
                egui::Modal::new(egui::Id::unique("changed certificate")).show(ui.ctx(), |ui| {
                    ui.heading(
                        egui::RichText::new("WARNING: the server's certificate changed")
                            .color(ui.visuals().error_fg_color),
                    );
                    ui.label(format!(
                        "{server} presented another certificate than the one pinned when \
                         you first connected. Someone may be intercepting the connection, or \
                         the server was reinstalled. Nothing was sent."
                    ));
                    ui.label("Pinned:");
                    ui.monospace(pinned.to_string());
                    ui.label("Presented now:");
                    ui.monospace(presented.to_string());
                    ui.label(
                        "Ask the server's operator for the new fingerprint before trusting it.",
                    );
                    ui.horizontal(|ui| {
                        if ui.button("Cancel").clicked() {
                            answer = Some(false);
                        }
                        if ui.button("Trust the new certificate").clicked() {
                            answer = Some(true);
                        }
                    });
                });
                match answer {
                    Some(true) => self.connect(server, Some(presented), bridge),
                    Some(false) => self.step = Step::Form,
                    None => {}
                }
            }
            Step::Form | Step::Busy(_) => {}
        }
    }

    /// Checks the form, then probes a new server or logs in to a known one.
    fn submit(&mut self, register: bool, bridge: &Bridge<Update>) {
        self.error = None;
        let server = match self.server.trim().parse::<ServerAddress>() {
            Ok(server) => server,
            Err(err) => {
                self.error = Some(format!("server: {err}"));
                return;
            }
        };
        if let Err(err) = UserName::parse(self.username.trim()) {
            self.error = Some(format!("user name: {err}"));
            return;
        }
        if self.password.is_empty() {
            self.error = Some("enter the password".to_owned());
            return;
        }
        self.register = register;
        let pinned =
            Profile::open(&self.profile_dir).and_then(|profile| profile.known_server(&server));
        match pinned {
            Ok(Some(_)) => self.connect(server, None, bridge),
            Ok(None) => {
                self.step = Step::Busy(format!("contacting {server}..."));
                bridge.spawn(async move {
                    let result = Client::probe(&server, PROBE_TIMEOUT)
                        .await
                        .map_err(|err| err.to_string());
                    Some(Update::Probed { server, result })
                });
            }
            Err(err) => self.error = Some(err.to_string()),
        }
    }

    /// Logs in (or registers), trusting `fingerprint` if given (else the pinned one).
    fn connect(
        &mut self,
        server: ServerAddress,
        fingerprint: Option<Fingerprint>,
        bridge: &Bridge<Update>,
    ) {
        let (Ok(username), false) = (
            UserName::parse(self.username.trim()),
            self.password.is_empty(),
        ) else {
            self.step = Step::Form;
            return;
        };
        let password = Password(std::mem::take(&mut self.password));
        let auth = if self.register {
            Auth::Register { username, password }
        } else {
            Auth::Login { username, password }
        };
        let profile = match Profile::open(&self.profile_dir) {
            Ok(profile) => profile,
            Err(err) => {
                self.error = Some(err.to_string());
                self.step = Step::Form;
                return;
            }
        };
        self.step = Step::Busy(format!("logging in to {server}..."));
        let profile_dir = self.profile_dir.clone();
        let config = ClientConfig::new(server.clone(), profile, auth)
            .fingerprint(fingerprint)
            .sync(true)
            .software(concat!("confide-gui ", env!("CARGO_PKG_VERSION")));
        let audio = self.audio.clone();
        bridge.spawn_with(move |delivery| async move {
            let (client, mut events) = match Client::connect(config).await {
                Ok(connected) => connected,
                Err(err) => {
                    delivery.send(Update::Connected(Box::new(Err(err))));
                    return;
                }
            };
            let rooms = match client.rooms().await {
                Ok(rooms) => rooms,
                Err(err) => {
                    client.close().await;
                    delivery.send(Update::Connected(Box::new(Err(err))));
                    return;
                }
            };
            let me = client.user().username.clone();
            let connected = Connected {
                client,
                me,
                server,
                rooms,
                profile_dir,
            };
            if !delivery.send(Update::Connected(Box::new(Ok(connected)))) {
                return;
            }
            while let Some(event) = events.next().await {
                // Live voice goes straight to the audio thread: fifty small frames a
                // second per speaker, which the window need not wake up for.
                if let ClientEvent::Voice { room, user, frame } = event {
                    audio.heard(room, user, frame);
                    continue;
                }
                if !delivery.send(Update::Event(event)) {
                    break;
                }
            }
        });
    }

    /// The probe finished: ask whether to trust the certificate.
    pub fn on_probed(&mut self, server: ServerAddress, result: Result<Fingerprint, String>) {
        match result {
            Ok(fingerprint) => {
                self.step = Step::Trust {
                    server,
                    fingerprint,
                }
            }
            Err(err) => {
                self.error = Some(err);
                self.step = Step::Form;
            }
        }
    }

    /// Logging in failed: say why (a changed certificate gets its own warning).
    pub fn on_failed(&mut self, err: &ClientError) {
        match err {
            ClientError::FingerprintChanged {
                server,
                pinned,
                presented,
                ..
            } => {
                self.step = Step::Changed {
                    server: server.clone(),
                    pinned: *pinned,
                    presented: *presented,
                };
            }
            other => {
                self.error = Some(other.to_string());
                self.step = Step::Form;
            }
        }
    }

    /// Remembers the server and user that just logged in.
    pub fn remember(&self, connected: &Connected) {
        let remembered = Remembered {
            server: connected.server.to_string(),
            username: connected.me.to_string(),
        };
        if let Err(err) = write_remembered(&self.profile_dir, &remembered) {
            tracing::warn!(cause = %err, "cannot remember the server and user");
        }
    }
}

fn read_remembered(dir: &Path) -> Option<Remembered> {
    let text = std::fs::read_to_string(dir.join(REMEMBERED)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_remembered(dir: &Path, remembered: &Remembered) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(remembered).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(REMEMBERED), text)
}
