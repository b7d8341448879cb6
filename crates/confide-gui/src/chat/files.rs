//! Sending and saving files: the file button and its browser, files dropped on the
//! window (with a hint while they hover), and Save… on a received file, which asks
//! where, asks again before replacing a file, and downloads with a progress bar.

use super::{ChatScreen, Outcome};
use crate::app::Update;
use crate::bridge::Bridge;
use crate::browser::{self, Choice, FileBrowser};
use crate::transfers::Direction;
use confide_client::{human_size, safe_file_name};
use confide_crypto::payload::FilePointer;
use confide_proto::{RoomId, Target};
use std::path::{Path, PathBuf};

/// What the browser is choosing a path for.
#[derive(Debug, Clone)]
pub(super) enum Browse {
    /// A file to send to a room.
    Send(RoomId),
    /// Where to save a received file.
    Save(FilePointer),
}

impl ChatScreen {
    /// The file button: choose a file to send to `room`.
    pub(super) fn choose_file(&mut self, room: RoomId) {
        let folder = self
            .last_folder
            .clone()
            .unwrap_or_else(browser::home_folder);
        let browser = FileBrowser::open("Send a file", "Send", &folder);
        self.browsing = Some((browser, Browse::Send(room)));
    }

    /// Save… on a received file: choose where.
    pub(super) fn choose_destination(&mut self, pointer: FilePointer) {
        let name = safe_file_name(&pointer.name);
        let browser =
            FileBrowser::save(&format!("Save {name}"), &browser::downloads_folder(), &name);
        self.browsing = Some((browser, Browse::Save(pointer)));
    }

    /// Encrypts and uploads `path` to `room`, then announces it there.
    pub(super) fn send_file(&mut self, room: RoomId, path: PathBuf, bridge: &Bridge<Update>) {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        );
        let (id, progress) = self.transfers.start(Direction::Upload, &name);
        let client = self.client.clone();
        bridge.spawn(async move {
            let result = client
                .send_file(Target::Room(room), &path, progress)
                .await
                .map(|sent| {
                    format!(
                        "sent {} ({})",
                        sent.pointer.name,
                        human_size(sent.pointer.size)
                    )
                })
                .map_err(|err| format!("not sent: {err}"));
            Some(Update::Outcome(Outcome::Transfer { id, result }))
        });
    }

    /// Downloads a file to `path` (replacing it only when `overwrite`).
    fn download(
        &mut self,
        pointer: FilePointer,
        path: PathBuf,
        overwrite: bool,
        bridge: &Bridge<Update>,
    ) {
        let name = safe_file_name(&pointer.name);
        let (id, progress) = self.transfers.start(Direction::Download, &name);
        let client = self.client.clone();
        bridge.spawn(async move {
            let result = client
                .download_file(&pointer, &path, overwrite, progress)
                .await
                .map(|size| format!("saved {} ({})", path.display(), human_size(size)))
                // The core's errors say it plainly: "… already exists", "does not match
                // the sender's SHA-256; … nothing was saved".
                .map_err(|err| format!("not saved: {err}"));
            Some(Update::Outcome(Outcome::Transfer { id, result }))
        });
    }

    /// Files dropped on the window go to the open room; while files hover, a hint says
    /// where they will go.
    pub(super) fn take_dropped_files(&mut self, ui: &mut egui::Ui, bridge: &Bridge<Update>) {
        let (hovering, dropped) = ui.input(|input| {
            (
                !input.raw.hovered_files.is_empty(),
                input
                    .raw
                    .dropped_files
                    .iter()
                    .map(|file| file.path().to_path_buf())
                    .collect::<Vec<PathBuf>>(),
            )
        });
        let room = self
            .rooms
            .selected()
            .filter(|room| room.is_joined())
            .map(|room| (room.id(), room.label()));
        if hovering {
            drop_hint(ui.ctx(), room.as_ref().map(|(_, label)| label.as_str()));
        }
        if dropped.is_empty() {
            return;
        }
        let Some((room, _)) = room else {
            self.status = Some("open a conversation to send files to it".to_owned());
            return;
        };
        for path in dropped {
            if path.is_dir() {
                self.status = Some(format!(
                    "{} is a folder; only files can be sent",
                    path.display()
                ));
                continue;
            }
            self.send_file(room, path, bridge);
        }
    }

    /// The browser, while it is open.
    pub(super) fn browser_ui(&mut self, ctx: &egui::Context, bridge: &Bridge<Update>) {
        let Some((browser, purpose)) = &mut self.browsing else {
            return;
        };
        match browser.show(ctx) {
            Choice::Pending => {}
            Choice::Cancelled => self.browsing = None,
            Choice::Chosen(path) => {
                let folder = browser.folder().to_path_buf();
                let purpose = purpose.clone();
                self.browsing = None;
                match purpose {
                    Browse::Send(room) => {
                        self.last_folder = Some(folder);
                        self.send_file(room, path, bridge);
                    }
                    Browse::Save(pointer) => {
                        if path.exists() {
                            self.replacing = Some((path, pointer));
                        } else {
                            self.download(pointer, path, false, bridge);
                        }
                    }
                }
            }
        }
    }

    /// Asks before a download replaces a file.
    pub(super) fn replace_ui(&mut self, ctx: &egui::Context, bridge: &Bridge<Update>) {
        let Some((path, pointer)) = self.replacing.clone() else {
            return;
        };
        let mut answer = None;
        egui::Modal::new(egui::Id::unique("replace file")).show(ctx, |ui| {
            ui.heading("Replace the file?");
            ui.label(format!(
                "{} already exists. Replace it with {}?",
                path.display(),
                safe_file_name(&pointer.name)
            ));
            ui.horizontal(|ui| {
                if ui.button("Replace").clicked() {
                    answer = Some(true);
                }
                if ui.button("Choose another name").clicked() {
                    answer = Some(false);
                }
            });
        });
        match answer {
            Some(true) => {
                self.replacing = None;
                self.download(pointer, path, true, bridge);
            }
            Some(false) => {
                self.replacing = None;
                let folder = path
                    .parent()
                    .map_or_else(browser::downloads_folder, Path::to_path_buf);
                let name = safe_file_name(&pointer.name);
                let browser = FileBrowser::save(&format!("Save {name}"), &folder, &name);
                self.browsing = Some((browser, Browse::Save(pointer)));
            }
            None => {}
        }
    }
}

/// Dims the window and says where dropped files will go.
fn drop_hint(ctx: &egui::Context, room: Option<&str>) {
    let screen = ctx.content_rect();
    ctx.layer_painter(egui::LayerId::new(
        egui::Order::Foreground,
        egui::Id::unique("drop shade"),
    ))
    .rect_filled(screen, 0.0, egui::Color32::from_black_alpha(160));
    let text = match room {
        Some(room) => format!("Drop files here to send them to {room}"),
        None => "Open a conversation to send files to it".to_owned(),
    };
    egui::Area::new(egui::Id::unique("drop hint"))
        .order(egui::Order::Tooltip)
        .anchor(egui::Align2::CENTER_CENTER, egui::Vec2::ZERO)
        .interactable(false)
        .show(ctx, |ui| {
            egui::Frame::popup(ui.style()).show(ui, |ui| {
                ui.heading(text);
            });
        });
}
