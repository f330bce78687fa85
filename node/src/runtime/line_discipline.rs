//! The terminal a Wasm container with `tty` is given: a Wasm guest has no pseudo-terminal,
//! so the runtime does what a terminal's line discipline would do in its usual (canonical)
//! mode, for `kubectl run -it` and `kubectl attach -it`:
//!
//! - what is typed is echoed, and reaches the guest a line at a time;
//! - Enter (carriage return, which kubectl's raw terminal sends) ends the line with a
//!   newline (`ICRNL`);
//! - Backspace (DEL or BS) erases the last character of the line (`ECHOE`);
//! - Ctrl-D at the start of a line ends the guest's input (`VEOF`), elsewhere it sends the
//!   line so far;
//! - Ctrl-C discards the line and interrupts the guest (`VINTR`: a terminal's SIGINT, whose
//!   default ends a program);
//! - what the guest writes has its newlines shown as carriage return and newline (`ONLCR`).

/// The state of one container's terminal: the line being typed.
#[derive(Debug, Default)]
pub struct LineDiscipline {
    line: Vec<u8>,
}

/// What typing some input did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Typed {
    /// Whole lines (or a line sent by Ctrl-D) for the guest's stdin.
    pub to_guest: Vec<u8>,
    /// What the terminal shows back.
    pub echo: Vec<u8>,
    /// Ctrl-D at the start of a line: the guest's input ends.
    pub end_of_input: bool,
    /// Ctrl-C: the guest is interrupted.
    pub interrupt: bool,
}

const INTR: u8 = 0x03;
const EOF: u8 = 0x04;
const BACKSPACE: u8 = 0x08;
const DEL: u8 = 0x7f;

impl LineDiscipline {
    /// Types `input`. Input after an end of input or an interrupt is dropped.
    pub fn input(&mut self, input: &[u8]) -> Typed {
        let mut typed = Typed::default();
        for &b in input {
            if typed.end_of_input || typed.interrupt {
                break;
            }
            match b {
                b'\r' | b'\n' => {
                    self.line.push(b'\n');
                    typed.to_guest.append(&mut self.line);
                    typed.echo.extend_from_slice(b"\r\n");
                }
                DEL | BACKSPACE => {
                    if self.line.pop().is_some() {
                        typed.echo.extend_from_slice(b"\x08 \x08");
                    }
                }
                EOF if self.line.is_empty() => typed.end_of_input = true,
                EOF => typed.to_guest.append(&mut self.line),
                INTR => {
                    self.line.clear();
                    typed.echo.extend_from_slice(b"^C\r\n");
                    typed.interrupt = true;
                }
                _ => {
                    self.line.push(b);
                    typed.echo.push(b);
                }
            }
        }
        typed
    }
}

/// What the guest writes, as the terminal shows it: each newline after a carriage return.
pub fn output(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 8);
    for &b in bytes {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_echoed_edited_and_sent_whole() {
        let mut t = LineDiscipline::default();
        let typed = t.input(b"ech");
        assert_eq!(typed.echo, b"ech");
        assert!(typed.to_guest.is_empty(), "nothing before the line ends");
        let typed = t.input(b"x\x7fo hi\r");
        assert_eq!(typed.to_guest, b"echo hi\n");
        assert_eq!(typed.echo, b"x\x08 \x08o hi\r\n");
        // Erasing an empty line shows nothing.
        assert_eq!(t.input(b"\x7f").echo, b"");
    }

    #[test]
    fn ctrl_d_ends_the_input_at_a_line_start_and_ctrl_c_interrupts() {
        let mut t = LineDiscipline::default();
        let typed = t.input(b"part\x04");
        assert_eq!(typed.to_guest, b"part");
        assert!(!typed.end_of_input);
        let typed = t.input(b"\x04ignored\r");
        assert!(typed.end_of_input);
        assert!(typed.to_guest.is_empty());
        let typed = t.input(b"half\x03more");
        assert!(typed.interrupt);
        assert_eq!(typed.echo, b"half^C\r\n");
        assert!(typed.to_guest.is_empty());
    }

    #[test]
    fn output_newlines_come_after_a_carriage_return() {
        assert_eq!(output(b"one\ntwo\n"), b"one\r\ntwo\r\n");
    }
}
