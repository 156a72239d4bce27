//! Quoting user input in messages, cut to a readable length.
//!
//! Errors are one line. A flag value or a file's line can be as long as the user likes (a
//! 1 GB System.map of NULs is one "line"), so every piece of user input a message quotes goes
//! through [`cut`]: at most [`MAX_QUOTED`] characters, control characters (newlines, NUL)
//! escaped, and the number of bytes left out said at the end.

use std::borrow::Cow;

/// The most characters of one quoted input shown in a message.
pub const MAX_QUOTED: usize = 80;

/// `text` as a message may quote it: on one line, and cut after [`MAX_QUOTED`] characters.
pub fn cut(text: &str) -> Cow<'_, str> {
    let plain = text.chars().take(MAX_QUOTED + 1).all(|c| !c.is_control());
    if plain && text.chars().nth(MAX_QUOTED).is_none() {
        return Cow::Borrowed(text);
    }
    let mut out = String::new();
    let mut used = 0usize;
    for c in text.chars().take(MAX_QUOTED) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        used += c.len_utf8();
    }
    if used < text.len() {
        out.push_str(&format!("... ({} more bytes)", text.len() - used));
    }
    Cow::Owned(out)
}

/// [`cut`] for bytes that may not be UTF-8 (shown lossily).
pub fn cut_bytes(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(MAX_QUOTED * 4)];
    let text = String::from_utf8_lossy(head);
    let mut shown = cut(&text).into_owned();
    if head.len() < bytes.len() && !shown.ends_with("bytes)") {
        shown.push_str(&format!("... ({} more bytes)", bytes.len() - head.len()));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_plain_text_is_unchanged() {
        assert_eq!(cut("drv_target_0"), "drv_target_0");
        assert!(matches!(cut("x"), Cow::Borrowed(_)));
    }

    #[test]
    fn long_text_is_cut_and_says_how_much_is_missing() {
        let long = "a".repeat(1000);
        let shown = cut(&long);
        assert_eq!(shown, format!("{}... (920 more bytes)", "a".repeat(80)));
    }

    #[test]
    fn control_characters_are_escaped_so_the_message_stays_one_line() {
        assert_eq!(cut("a\nb\0"), "a\\nb\\u{0}");
        let nuls = "\0".repeat(1 << 20);
        let shown = cut(&nuls);
        assert!(
            !shown.contains('\0') && shown.len() < 600,
            "{}",
            shown.len()
        );
    }

    #[test]
    fn multibyte_text_is_cut_on_a_character_boundary() {
        let s = "é".repeat(100);
        assert_eq!(cut(&s), format!("{}... (40 more bytes)", "é".repeat(80)));
    }

    #[test]
    fn bytes_are_cut_before_decoding() {
        let shown = cut_bytes(&vec![0xffu8; 10_000]);
        assert!(
            shown.len() < 600 && shown.ends_with("more bytes)"),
            "{shown}"
        );
    }
}
