//! [`ConfideApp`]: the window, which shows the start screen until a client is
//! connected, then the chat screen. Each frame first takes what the client core
//! delivered (see [`crate::bridge`]), then draws.

use crate::audio::{Audio, AudioUpdate};
use crate::bridge::Bridge;
use crate::chat::{ChatScreen, Outcome};
use crate::start::{Connected, StartScreen};
use confide_client::{ClientError, ClientEvent, Fingerprint, ServerAddress};
use std::path::PathBuf;

/// Updates delivered per frame at most (the rest wait for the next frame, which is
/// requested at once).
const UPDATES_PER_FRAME: usize = 1000;

/// What the client core hands back to the window.
pub enum Update {
    /// The certificate a server presented, for the trust prompt.
    Probed {
        /// The server asked.
        server: ServerAddress,
        /// Its fingerprint, or why it could not be read.
        result: Result<Fingerprint, String>,
    },
    /// The login finished.
    Connected(Box<Result<Connected, ClientError>>),
    /// An event of the connected client.
    Event(ClientEvent),
    /// The answer to a request of the chat screen.
    Outcome(Outcome),
    /// News from the audio thread.
    Audio(AudioUpdate),
}

/// Which screen is up.
enum Screen {
    Start(Box<StartScreen>),
    Chat(Box<ChatScreen>),
}

/// The desktop app.
pub struct ConfideApp {
    bridge: Bridge<Update>,
    audio: Audio,
    profile_dir: PathBuf,
    screen: Screen,
    fonts_installed: bool,
}

impl ConfideApp {
    /// The app with its profile in `profile_dir` (the remembered server and user are
    /// read from it).
    ///
    /// # Errors
    /// If the runtime for the client core cannot start.
    pub fn new(profile_dir: PathBuf) -> std::io::Result<ConfideApp> {
        let bridge = Bridge::new()?;
        let audio = Audio::start(bridge.delivery());
        let start = StartScreen::new(profile_dir.clone(), audio.clone());
        Ok(ConfideApp {
            bridge,
            audio,
            profile_dir,
            screen: Screen::Start(Box::new(start)),
            fonts_installed: false,
        })
    }

    /// Draws one frame into `ui` (the whole window).
    pub fn show(&mut self, ui: &mut egui::Ui) {
        self.bridge.attach(ui.ctx());
        if !self.fonts_installed {
            crate::fonts::install(ui.ctx());
            self.fonts_installed = true;
        }
        let updates = self.bridge.drain(UPDATES_PER_FRAME);
        if updates.len() == UPDATES_PER_FRAME {
            ui.ctx().request_repaint();
        }
        for update in updates {
            self.apply(update);
        }
        match &mut self.screen {
            Screen::Start(start) => start.show(ui, &self.bridge),
            Screen::Chat(chat) => {
                if chat.show(ui, &self.bridge) {
                    let chat = std::mem::replace(
                        &mut self.screen,
                        Screen::Start(Box::new(StartScreen::new(
                            self.profile_dir.clone(),
                            self.audio.clone(),
                        ))),
                    );
                    if let Screen::Chat(chat) = chat {
                        chat.disconnect(&self.bridge);
                    }
                }
            }
        }
    }

    fn apply(&mut self, update: Update) {
        match (&mut self.screen, update) {
            (Screen::Start(start), Update::Probed { server, result }) => {
                start.on_probed(server, result);
            }
            (Screen::Start(start), Update::Connected(result)) => match *result {
                Ok(connected) => {
                    start.remember(&connected);
                    self.screen =
                        Screen::Chat(Box::new(ChatScreen::new(connected, self.audio.clone())));
                }
                Err(err) => start.on_failed(&err),
            },
            (Screen::Chat(chat), Update::Event(event)) => chat.on_event(event),
            (Screen::Chat(chat), Update::Outcome(outcome)) => chat.on_outcome(outcome),
            (Screen::Chat(chat), Update::Audio(update)) => chat.on_audio(update, &self.bridge),
            // Late answers for a screen that is gone.
            _ => {}
        }
    }

    /// Whether the chat screen is up (for tests and the window title).
    #[must_use]
    pub fn is_connected(&self) -> bool {
        matches!(self.screen, Screen::Chat(_))
    }

    /// The chat screen, if it is up (tests read its models).
    #[must_use]
    pub fn chat(&self) -> Option<&ChatScreen> {
        match &self.screen {
            Screen::Chat(chat) => Some(chat),
            Screen::Start(_) => None,
        }
    }

    /// Closes the connection, if any (when the window closes).
    pub fn shut_down(&mut self) {
        if let Screen::Chat(chat) = &self.screen {
            let client = chat.client().clone();
            self.bridge.block_on(async move { client.close().await });
        }
    }
}

impl eframe::App for ConfideApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }

    fn on_exit(&mut self) {
        self.shut_down();
    }
}
