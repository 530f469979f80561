//! Slash commands, shared by the terminal and the scripted front end.

/// One line of user input, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Nothing (blank line).
    Empty,
    /// Text for the current chat. A leading `//` sends a literal `/`.
    Text(String),
    /// A slash command.
    Command(Command),
}

/// The slash commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Connect(String),
    Switch(String),
    /// End the current chat (`/end`), like Ctrl-C.
    End,
    Chats,
    Who,
    Fingerprint(Option<String>),
    Trust(String),
    Help,
    Quit,
    /// A command that needs an argument it did not get, or an unknown one.
    Bad(String),
}

/// One line per command, for `/help`.
pub const HELP: &[(&str, &str)] = &[
    (
        "/connect NAME",
        "open a chat with NAME (it becomes the current chat)",
    ),
    (
        "/switch NAME",
        "make the open chat with NAME the current one",
    ),
    ("/chats", "list open chats"),
    ("/end", "end the current chat (Ctrl-C does the same)"),
    ("/who", "list users online"),
    (
        "/fingerprint [NAME]",
        "show your key's fingerprint, or the safety number with NAME",
    ),
    (
        "/trust NAME",
        "accept NAME's new key after checking the safety number",
    ),
    ("/help", "this list"),
    (
        "/quit",
        "end all chats, log out and exit (Ctrl-D does the same)",
    ),
];

const NAMES: &[&str] = &[
    "connect",
    "switch",
    "chats",
    "end",
    "who",
    "fingerprint",
    "trust",
    "help",
    "quit",
];

/// Parses one line of input.
pub fn parse(line: &str) -> Line {
    let trimmed = line.trim_end_matches(['\r', '\n']);
    if trimmed.trim().is_empty() {
        return Line::Empty;
    }
    if let Some(rest) = trimmed.strip_prefix("//") {
        return Line::Text(format!("/{rest}"));
    }
    let Some(rest) = trimmed.strip_prefix('/') else {
        return Line::Text(trimmed.to_string());
    };
    let mut words = rest.split_whitespace();
    let name = words.next().unwrap_or("");
    let arg = words.next().map(str::to_string);
    let need = |arg: Option<String>, make: fn(String) -> Command| match arg {
        Some(a) => make(a),
        None => Command::Bad(format!("/{name} needs a user name")),
    };
    Line::Command(match name {
        "connect" | "c" => need(arg, Command::Connect),
        "switch" | "s" => need(arg, Command::Switch),
        "end" | "close" => Command::End,
        "chats" => Command::Chats,
        "who" => Command::Who,
        "fingerprint" | "fp" => Command::Fingerprint(arg),
        "trust" => need(arg, Command::Trust),
        "help" | "?" => Command::Help,
        "quit" | "exit" | "q" => Command::Quit,
        other => Command::Bad(match suggest(other) {
            Some(s) => format!("unknown command /{other}; did you mean /{s}? (/help lists them)"),
            None => format!("unknown command /{other} (/help lists them)"),
        }),
    })
}

/// The known command closest to `word` (by edit distance), if any is close.
fn suggest(word: &str) -> Option<&'static str> {
    NAMES
        .iter()
        .map(|n| (distance(word, n), *n))
        .filter(|(d, n)| *d <= 2.max(n.len() / 3) || n.starts_with(word))
        .min()
        .map(|(_, n)| n)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_and_commands() {
        assert_eq!(parse("hello"), Line::Text("hello".into()));
        assert_eq!(parse("  "), Line::Empty);
        assert_eq!(parse("//etc"), Line::Text("/etc".into()));
        assert_eq!(
            parse("/connect bianca"),
            Line::Command(Command::Connect("bianca".into()))
        );
        assert_eq!(
            parse("/fingerprint"),
            Line::Command(Command::Fingerprint(None))
        );
        assert!(matches!(parse("/connect"), Line::Command(Command::Bad(_))));
    }

    #[test]
    fn unknown_commands_get_a_suggestion() {
        let Line::Command(Command::Bad(msg)) = parse("/conect bianca") else {
            panic!()
        };
        assert!(msg.contains("/connect"), "{msg}");
        let Line::Command(Command::Bad(msg)) = parse("/xyzzy") else {
            panic!()
        };
        assert!(!msg.contains("did you mean"), "{msg}");
    }
}
