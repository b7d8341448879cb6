//! Fonts: egui's own, with the Noto Color Emoji font (installed by the project's setup
//! script, or by the system's package manager) as a fallback for emoji, drawn in colour.

use std::path::Path;

/// Where Linux distributions put Noto Color Emoji.
const EMOJI_FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto-emoji/NotoColorEmoji.ttf",
];

/// Adds the colour emoji font as the last fallback of every family. Returns whether a
/// font was found (without one, emoji show as boxes).
pub fn install(ctx: &egui::Context) -> bool {
    let Some(bytes) = EMOJI_FONTS
        .iter()
        .find_map(|path| std::fs::read(Path::new(path)).ok())
    else {
        tracing::warn!("no Noto Color Emoji font found; emoji will show as boxes");
        return false;
    };
    ctx.add_font(egui::epaint::text::FontInsert {
        name: "Noto Color Emoji".to_owned(),
        data: egui::FontData::from_owned(bytes),
        families: [egui::FontFamily::Proportional, egui::FontFamily::Monospace]
            .into_iter()
            .map(|family| egui::epaint::text::InsertFontFamily {
                family,
                priority: egui::epaint::text::FontPriority::Lowest,
            })
            .collect(),
    });
    true
}
