//! A small file browser in a dialog of the window, to pick a file to send or a place to
//! save one (the egui-file-dialog crate has no release for egui 0.37 yet).
//!
//! It lists a folder (folders first, then files with their sizes; hidden ones only on
//! request), goes up or into folders, and takes a typed folder or file name too. The
//! folder is read when it is opened, not on every frame. It only chooses a path: what
//! happens to it is the caller's business.

use confide_client::human_size;
use std::path::{Path, PathBuf};

/// Entries listed at most (a huge folder is cut short, with a note).
const MAX_ENTRIES: usize = 5000;

/// What the browser is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Choose an existing file.
    Open,
    /// Choose where to write a file.
    Save,
}

/// What the user did in a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Still choosing.
    Pending,
    /// This path.
    Chosen(PathBuf),
    /// Closed without choosing.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    name: String,
    folder: bool,
    size: u64,
}

/// The browser's state.
#[derive(Debug, Clone)]
pub struct FileBrowser {
    mode: Mode,
    title: String,
    action: String,
    folder: PathBuf,
    folder_text: String,
    name: String,
    items: Vec<Item>,
    truncated: bool,
    show_hidden: bool,
    error: Option<String>,
}

impl FileBrowser {
    /// A browser choosing a file to open, starting in `folder`; the button says
    /// `action` ("Send").
    #[must_use]
    pub fn open(title: &str, action: &str, folder: &Path) -> FileBrowser {
        FileBrowser::new(Mode::Open, title, action, folder, String::new())
    }

    /// A browser choosing where to save, starting in `folder` with `name` filled in.
    #[must_use]
    pub fn save(title: &str, folder: &Path, name: &str) -> FileBrowser {
        FileBrowser::new(Mode::Save, title, "Save", folder, name.to_owned())
    }

    fn new(mode: Mode, title: &str, action: &str, folder: &Path, name: String) -> FileBrowser {
        let mut browser = FileBrowser {
            mode,
            title: title.to_owned(),
            action: action.to_owned(),
            folder: PathBuf::new(),
            folder_text: String::new(),
            name,
            items: Vec::new(),
            truncated: false,
            show_hidden: false,
            error: None,
        };
        browser.enter(folder.to_path_buf());
        browser
    }

    /// The folder shown.
    #[must_use]
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// Lists `folder` (keeping the current one if it cannot be read).
    fn enter(&mut self, folder: PathBuf) {
        match list(&folder, self.show_hidden) {
            Ok((items, truncated)) => {
                self.folder_text = folder.display().to_string();
                self.folder = folder;
                self.items = items;
                self.truncated = truncated;
                self.error = None;
            }
            Err(err) => {
                self.error = Some(format!("cannot open {}: {err}", folder.display()));
                self.folder_text = self.folder.display().to_string();
            }
        }
    }

    /// The path the name field names (absolute, or in the folder shown).
    fn target(&self) -> PathBuf {
        self.folder.join(self.name.trim())
    }

    /// Checks the choice; a folder is entered instead of chosen.
    fn choose(&mut self) -> Option<PathBuf> {
        if self.name.trim().is_empty() {
            self.error = Some(match self.mode {
                Mode::Open => "choose a file".to_owned(),
                Mode::Save => "type a file name".to_owned(),
            });
            return None;
        }
        let path = self.target();
        if path.is_dir() {
            self.name.clear();
            self.enter(path);
            return None;
        }
        match self.mode {
            Mode::Open if !path.is_file() => {
                self.error = Some(format!("{} is not a file", path.display()));
                None
            }
            Mode::Save if !path.parent().is_some_and(Path::is_dir) => {
                self.error = Some(format!("there is no folder {}", path.display()));
                None
            }
            _ => Some(path),
        }
    }

    /// Draws the browser as a dialog over the window.
    pub fn show(&mut self, ctx: &egui::Context) -> Choice {
        let mut choice = Choice::Pending;
        let mut go_to = None;
        egui::Modal::new(egui::Id::unique("file browser")).show(ctx, |ui| {
            ui.set_width(460.0);
            ui.heading(self.title.as_str());
            ui.horizontal(|ui| {
                let label = ui.label("Folder");
                let response =
                    ui.add(egui::TextEdit::singleline(&mut self.folder_text).desired_width(260.0));
                let response = response.labelled_by(label.id);
                let entered =
                    response.lost_focus() && ui.input(|input| input.key_pressed(egui::Key::Enter));
                if ui.button("Go").clicked() || entered {
                    go_to = Some(PathBuf::from(self.folder_text.trim()));
                }
                if ui.button("⬆ Up").clicked()
                    && let Some(parent) = self.folder.parent()
                {
                    go_to = Some(parent.to_path_buf());
                }
            });
            let hidden = self.show_hidden;
            ui.checkbox(&mut self.show_hidden, "Show hidden files");
            if hidden != self.show_hidden {
                go_to = Some(self.folder.clone());
            }
            ui.separator();
            let mut picked = None;
            let mut opened = None;
            egui::ScrollArea::vertical()
                .max_height(260.0)
                .auto_shrink([false, true])
                .show(ui, |ui| {
                    if self.items.is_empty() {
                        ui.weak("(empty folder)");
                    }
                    for item in &self.items {
                        if item.folder {
                            if ui
                                .selectable_label(false, format!("📁 {}", item.name))
                                .clicked()
                            {
                                opened = Some(item.name.clone());
                            }
                        } else {
                            ui.horizontal(|ui| {
                                let selected = self.name == item.name;
                                let response =
                                    ui.selectable_label(selected, format!("📄 {}", item.name));
                                if response.clicked() {
                                    picked = Some((item.name.clone(), false));
                                }
                                if response.double_clicked() {
                                    picked = Some((item.name.clone(), true));
                                }
                                ui.weak(human_size(item.size));
                            });
                        }
                    }
                    if self.truncated {
                        ui.weak(format!("(only the first {MAX_ENTRIES} entries are listed)"));
                    }
                });
            if let Some(name) = opened {
                go_to = Some(self.folder.join(name));
            }
            let mut confirm = false;
            if let Some((name, double)) = picked {
                self.name = name;
                confirm = double && self.mode == Mode::Open;
            }
            ui.separator();
            ui.horizontal(|ui| {
                let label = ui.label("File name");
                ui.add(egui::TextEdit::singleline(&mut self.name).desired_width(320.0))
                    .labelled_by(label.id);
            });
            if let Some(error) = &self.error {
                ui.colored_label(ui.visuals().error_fg_color, error.as_str());
            }
            ui.horizontal(|ui| {
                if ui.button(self.action.as_str()).clicked() {
                    confirm = true;
                }
                if ui.button("Cancel").clicked() {
                    choice = Choice::Cancelled;
                }
            });
            if confirm && let Some(path) = self.choose() {
                choice = Choice::Chosen(path);
            }
        });
        if let Some(folder) = go_to {
            self.enter(folder);
        }
        choice
    }
}

/// A folder's entries, folders first, each group by name; whether the list was cut.
fn list(folder: &Path, show_hidden: bool) -> std::io::Result<(Vec<Item>, bool)> {
    let mut items = Vec::new();
    let mut truncated = false;
    for entry in std::fs::read_dir(folder)? {
        let Ok(entry) = entry else {
            continue;
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        if !show_hidden && name.starts_with('.') {
            continue;
        }
        if items.len() == MAX_ENTRIES {
            truncated = true;
            break;
        }
        // Follows symbolic links, so a link to a folder opens like one.
        let meta = std::fs::metadata(entry.path()).ok();
        items.push(Item {
            name,
            folder: meta.as_ref().is_some_and(std::fs::Metadata::is_dir),
            size: meta.as_ref().map_or(0, std::fs::Metadata::len),
        });
    }
    items.sort_by(|a, b| {
        b.folder
            .cmp(&a.folder)
            .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
    });
    Ok((items, truncated))
}

/// Where to start saving: the user's Downloads folder, or home, or the current folder.
#[must_use]
pub fn downloads_folder() -> PathBuf {
    directories::UserDirs::new()
        .and_then(|dirs| {
            dirs.download_dir()
                .filter(|dir| dir.is_dir())
                .map(Path::to_path_buf)
                .or_else(|| Some(dirs.home_dir().to_path_buf()))
        })
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where to start looking for a file to send: home, or the current folder.
#[must_use]
pub fn home_folder() -> PathBuf {
    directories::UserDirs::new()
        .map(|dirs| dirs.home_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_come_first_and_hidden_files_only_on_request() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("zeta")).unwrap();
        std::fs::write(dir.path().join("Alpha.txt"), b"12345").unwrap();
        std::fs::write(dir.path().join("beta.txt"), b"").unwrap();
        std::fs::write(dir.path().join(".secret"), b"").unwrap();
        let (items, truncated) = list(dir.path(), false).unwrap();
        let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["zeta", "Alpha.txt", "beta.txt"]);
        assert!(items[0].folder && !truncated);
        assert_eq!(items[1].size, 5);
        let (items, _) = list(dir.path(), true).unwrap();
        assert_eq!(items.len(), 4);
    }

    #[test]
    fn choosing_checks_the_path_and_enters_folders() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a.txt"), b"a").unwrap();
        let mut open = FileBrowser::open("Send a file", "Send", dir.path());
        assert_eq!(open.choose(), None, "nothing chosen yet");
        open.name = "missing.txt".to_owned();
        assert_eq!(open.choose(), None);
        assert!(open.error.as_deref().unwrap().contains("is not a file"));
        open.name = "sub".to_owned();
        assert_eq!(open.choose(), None);
        assert_eq!(open.folder(), dir.path().join("sub"));
        open.name = dir.path().join("a.txt").display().to_string();
        assert_eq!(open.choose(), Some(dir.path().join("a.txt")), "absolute");

        let mut save = FileBrowser::save("Save", dir.path(), "new.txt");
        assert_eq!(save.choose(), Some(dir.path().join("new.txt")));
        save.name = "nowhere/new.txt".to_owned();
        assert_eq!(save.choose(), None);
    }

    #[test]
    fn an_unreadable_folder_keeps_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut browser = FileBrowser::open("Send a file", "Send", dir.path());
        browser.enter(dir.path().join("missing"));
        assert_eq!(browser.folder(), dir.path());
        assert!(browser.error.is_some());
    }
}
