//! What a person at the machine's screen sees and types: the VGA text screen read
//! through QEMU's monitor, and keys pressed on its PS/2 keyboard with `sendkey`.
//!
//! In VGA text mode each cell of the 80x25 screen is two bytes of video memory from
//! 0xb8000: the character (a code of the card's font, code page 437) and its colours.
//! Linux's VGA console scrolls by moving the card's start address through its 32 KiB
//! rather than by copying, so the screen shown starts at the CRT controller's start
//! address (registers 0x0c/0x0d, in cells), read through the controller's index and data
//! ports (0x3d4/0x3d5) with the monitor's `o` and `i`; the index the guest had set is put
//! back afterwards.

use crate::{Vm, VmError};

pub const COLUMNS: usize = 80;
pub const ROWS: usize = 25;
const VIDEO_MEMORY: u64 = 0xb8000;

/// One look at the screen.
#[derive(Debug, Clone)]
pub struct Screen {
    /// The character byte of every cell, row by row.
    pub cells: Vec<u8>,
}

impl Screen {
    /// Row `i` as text, trailing blanks removed; a code outside printable ASCII shows as
    /// `\u{fffd}` (see [`Screen::unprintable`]).
    pub fn row(&self, i: usize) -> String {
        let start = i * COLUMNS;
        let row = self.cells.get(start..start + COLUMNS).unwrap_or_default();
        row.iter()
            .map(|&b| match b {
                0x20..=0x7e => b as char,
                _ => '\u{fffd}',
            })
            .collect::<String>()
            .trim_end()
            .to_owned()
    }

    pub fn rows(&self) -> Vec<String> {
        (0..ROWS).map(|i| self.row(i)).collect()
    }

    /// The whole screen, rows joined with newlines (for messages).
    pub fn text(&self) -> String {
        self.rows().join("\n")
    }

    /// The first row containing `text`.
    pub fn find(&self, text: &str) -> Option<usize> {
        self.rows().iter().position(|r| r.contains(text))
    }

    /// Cells whose code is not printable ASCII (a blank cell is a space): box drawing,
    /// symbols or control glyphs of the font. (A character the font lacks entirely is
    /// drawn as `?`, which only the expected text can tell apart.)
    pub fn unprintable(&self) -> Vec<(usize, usize, u8)> {
        self.cells
            .iter()
            .enumerate()
            .filter(|(_, b)| !(0x20..=0x7e).contains(*b))
            .map(|(i, b)| (i / COLUMNS, i % COLUMNS, *b))
            .collect()
    }
}

/// Reads the screen as it is shown now.
pub fn read(vm: &Vm) -> Result<Screen, VmError> {
    let start = start_address(vm)?;
    let address = VIDEO_MEMORY + 2 * u64::from(start);
    let dump = vm.monitor(&format!("xp /{}hx {address:#x}", COLUMNS * ROWS))?;
    // Lines of `00000000000b8000: 0x0720 0x0720 …`: the words after each colon.
    let cells: Vec<u8> = dump
        .lines()
        .filter_map(|line| line.split_once(": ").map(|(_, words)| words))
        .flat_map(str::split_whitespace)
        .filter_map(|w| u16::from_str_radix(w.trim_start_matches("0x"), 16).ok())
        .map(|cell| (cell & 0xff) as u8)
        .collect();
    assert_eq!(
        cells.len(),
        COLUMNS * ROWS,
        "the monitor's dump of video memory is not one screen:\n{dump}"
    );
    Ok(Screen { cells })
}

/// The CRT controller's start address, in cells from 0xb8000.
fn start_address(vm: &Vm) -> Result<u16, VmError> {
    let saved = port_in(vm, 0x3d4)?;
    vm.monitor("o /b 0x3d4 0x0c")?;
    let high = port_in(vm, 0x3d5)?;
    vm.monitor("o /b 0x3d4 0x0d")?;
    let low = port_in(vm, 0x3d5)?;
    vm.monitor(&format!("o /b 0x3d4 {saved:#x}"))?;
    Ok(u16::from(high) << 8 | u16::from(low))
}

/// One byte from an I/O port: the monitor answers `portb[0x03d5] = 0x07`.
fn port_in(vm: &Vm, port: u16) -> Result<u8, VmError> {
    let answer = vm.monitor(&format!("i /b {port:#x}"))?;
    let value = answer
        .rsplit_once("= ")
        .and_then(|(_, v)| u8::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok());
    Ok(value.unwrap_or_else(|| panic!("the monitor's answer to `i` is {answer:?}")))
}

/// Presses one key (QEMU's names: `ret`, `down`, `a`, `minus`).
pub fn press(vm: &Vm, key: &str) -> Result<(), VmError> {
    vm.monitor(&format!("sendkey {key}"))?;
    Ok(())
}

/// Types `text` on the keyboard: lowercase letters, digits, `-` and `.`.
pub fn type_text(vm: &Vm, text: &str) -> Result<(), VmError> {
    for c in text.chars() {
        let key = match c {
            'a'..='z' | '0'..='9' => c.to_string(),
            '-' => "minus".into(),
            '.' => "dot".into(),
            other => panic!("no key for {other:?} in this helper"),
        };
        press(vm, &key)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_the_character_bytes_and_mark_the_rest() {
        let mut cells = vec![b' '; COLUMNS * ROWS];
        cells[..5].copy_from_slice(b"Hello");
        cells[COLUMNS] = 0xc4; // CP437's box drawing line
        cells[COLUMNS + 1] = b'?';
        let screen = Screen { cells };
        assert_eq!(screen.row(0), "Hello");
        assert_eq!(screen.row(1), "\u{fffd}?");
        assert_eq!(screen.row(2), "");
        assert_eq!(screen.find("ell"), Some(0));
        assert_eq!(screen.unprintable(), vec![(1, 0, 0xc4)]);
    }
}
