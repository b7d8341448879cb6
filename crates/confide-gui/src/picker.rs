//! The emoji picker: a search box, a tab of recently used emoji and one per category,
//! and a grid of emoji to click. Recently used emoji are kept in the profile.

use crate::emoji;
use std::path::{Path, PathBuf};

/// The file in the profile with the recently used emoji.
const RECENT_FILE: &str = "recent-emoji.json";

/// Emoji shown for a search at most.
const SEARCH_RESULTS: usize = 80;

/// Which tab is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tab {
    Recent,
    Group(emojis::Group),
}

/// The picker's state.
pub struct EmojiPicker {
    /// Whether it is showing.
    pub open: bool,
    query: String,
    tab: Tab,
    recent: Vec<String>,
    file: PathBuf,
}

impl EmojiPicker {
    /// A closed picker with the recently used emoji of the profile in `dir`.
    #[must_use]
    pub fn new(dir: &Path) -> EmojiPicker {
        let file = dir.join(RECENT_FILE);
        let recent: Vec<String> = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        let tab = if recent.is_empty() {
            Tab::Group(emojis::Group::SmileysAndEmotion)
        } else {
            Tab::Recent
        };
        EmojiPicker {
            open: false,
            query: String::new(),
            tab,
            recent,
            file,
        }
    }

    /// The recently used emoji, newest first.
    #[must_use]
    pub fn recent(&self) -> &[String] {
        &self.recent
    }

    /// Draws the picker (if open) in a window; returns the emoji clicked.
    pub fn show(&mut self, ctx: &egui::Context) -> Option<String> {
        if !self.open {
            return None;
        }
        let mut picked = None;
        let mut open = self.open;
        egui::Window::new("Emoji")
            .open(&mut open)
            .collapsible(false)
            .resizable(true)
            .default_size([360.0, 320.0])
            .anchor(egui::Align2::RIGHT_BOTTOM, [-180.0, -90.0])
            .show(ctx, |ui| {
                let label = ui.label("Search emoji");
                ui.add(egui::TextEdit::singleline(&mut self.query).hint_text("party, heart, cat"))
                    .labelled_by(label.id);
                if self.query.trim().is_empty() {
                    self.tabs(ui);
                }
                ui.separator();
                egui::ScrollArea::vertical().show(ui, |ui| {
                    picked = self.grid(ui);
                });
            });
        self.open = open;
        if let Some(emoji) = &picked {
            emoji::remember(&mut self.recent, emoji);
            self.save();
        }
        picked
    }

    fn tabs(&mut self, ui: &mut egui::Ui) {
        ui.horizontal_wrapped(|ui| {
            if ui
                .selectable_label(self.tab == Tab::Recent, "Recent")
                .clicked()
            {
                self.tab = Tab::Recent;
            }
            for group in emojis::Group::iter() {
                if ui
                    .selectable_label(self.tab == Tab::Group(group), emoji::group_label(group))
                    .clicked()
                {
                    self.tab = Tab::Group(group);
                }
            }
        });
    }

    fn grid(&self, ui: &mut egui::Ui) -> Option<String> {
        let shown: Vec<(String, String)> = if self.query.trim().is_empty() {
            match self.tab {
                Tab::Recent => self
                    .recent
                    .iter()
                    .map(|e| {
                        let name = emojis::get(e).map_or_else(String::new, |e| e.name().to_owned());
                        (e.clone(), name)
                    })
                    .collect(),
                Tab::Group(group) => emoji::in_group(group)
                    .map(|e| (e.as_str().to_owned(), e.name().to_owned()))
                    .collect(),
            }
        } else {
            emoji::search(&self.query, SEARCH_RESULTS)
                .into_iter()
                .map(|e| (e.as_str().to_owned(), e.name().to_owned()))
                .collect()
        };
        if shown.is_empty() {
            ui.weak(if self.query.trim().is_empty() {
                "Nothing used yet."
            } else {
                "No emoji found."
            });
            return None;
        }
        let mut picked = None;
        ui.horizontal_wrapped(|ui| {
            for (emoji, name) in shown {
                let button = egui::Button::new(egui::RichText::new(&emoji).size(22.0)).frame(false);
                if ui.add(button).on_hover_text(&name).clicked() {
                    picked = Some(emoji);
                }
            }
        });
        picked
    }

    fn save(&self) {
        let result = serde_json::to_string(&self.recent)
            .map_err(std::io::Error::other)
            .and_then(|text| std::fs::write(&self.file, text));
        if let Err(err) = result {
            tracing::warn!(cause = %err, "cannot save the recently used emoji");
        }
    }
}
