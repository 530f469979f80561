//! Slash commands, shared by the terminal and the scripted front end.

/// An administrator's command, as typed (carried out by [`crate::admin`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    /// `/adduser NAME [--admin]`.
    AddUser { name: String, admin: bool },
    /// `/listusers`.
    ListUsers,
    /// `/logoutuser NAME`.
    LogoutUser(String),
    /// `/lock NAME`.
    Lock(String),
    /// `/unlock NAME`.
    Unlock(String),
    /// `/shutdown`.
    Shutdown,
}

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
    Join(String),
    Leave(Option<String>),
    Rooms,
    Members(Option<String>),
    /// A quick private message that does not change the current chat.
    Msg(String, String),
    /// End the current chat (`/end`), like Ctrl-C.
    End,
    Chats,
    Who,
    Fingerprint(Option<String>),
    Trust(String),
    /// Send a joke (from the joke API, or a bundled one) into the current chat or room.
    Joke,
    Help,
    Quit,
    /// An administrator's command (see [`crate::admin`]).
    Admin(AdminCommand),
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
    (
        "/join ROOM",
        "join a room (or make it current); plain lines then go to the room",
    ),
    ("/leave [ROOM]", "leave the current room (or ROOM)"),
    ("/rooms", "list rooms"),
    ("/members [ROOM]", "list a room's members, online or not"),
    (
        "/msg NAME TEXT",
        "send one private message without leaving the current chat or room",
    ),
    ("/whisper NAME TEXT", "the same as /msg"),
    ("@NAME TEXT", "the same as /msg"),
    ("/chats", "list open chats"),
    ("/end", "end the current chat (Ctrl-C does the same)"),
    ("/who", "list users online"),
    (
        "/fingerprint [NAME]",
        "show your key's fingerprint, or the safety number with NAME",
    ),
    (
        "/trust NAME",
        "show NAME's current key and safety number; `yes` on the next line pins it",
    ),
    (
        "/adduser NAME",
        "administrators: create an account (add --admin for an administrator); the password is asked next",
    ),
    (
        "/listusers",
        "administrators: every account, online or not, locked or not",
    ),
    (
        "/logoutuser NAME",
        "administrators: end NAME's directory session",
    ),
    (
        "/lock NAME",
        "administrators: lock NAME's account until unlocked",
    ),
    ("/unlock NAME", "administrators: lift a lock or lockout"),
    (
        "/shutdown",
        "administrators: stop the directory (everyone is told)",
    ),
    ("/joke", "send a random joke into the current chat or room"),
    ("/help", "this list"),
    (
        "/quit",
        "end all chats, log out and exit (Ctrl-D does the same)",
    ),
];

const NAMES: &[&str] = &[
    "connect",
    "switch",
    "join",
    "leave",
    "rooms",
    "members",
    "msg",
    "whisper",
    "chats",
    "end",
    "who",
    "fingerprint",
    "trust",
    "adduser",
    "listusers",
    "logoutuser",
    "lock",
    "unlock",
    "shutdown",
    "joke",
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
    if let Some(rest) = trimmed.strip_prefix('@')
        && let Some((name, text)) = rest.split_once(' ')
        && proto::names::check_username(name).is_ok()
    {
        return Line::Command(Command::Msg(name.to_string(), text.to_string()));
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
        "join" | "j" => need(arg, Command::Join),
        "leave" => Command::Leave(arg),
        "rooms" => Command::Rooms,
        "members" => Command::Members(arg),
        "msg" | "whisper" | "w" => match rest
            .split_once(' ')
            .map(|(_, r)| r.trim_start().split_once(' '))
        {
            Some(Some((to, text))) if !text.is_empty() => {
                Command::Msg(to.to_string(), text.to_string())
            }
            _ => Command::Bad(format!("usage: /{name} NAME TEXT")),
        },
        "end" | "close" => Command::End,
        "chats" => Command::Chats,
        "who" => Command::Who,
        "fingerprint" | "fp" => Command::Fingerprint(arg),
        "trust" => need(arg, Command::Trust),
        "adduser" => match (arg, words.next()) {
            (Some(name), None) => Command::Admin(AdminCommand::AddUser { name, admin: false }),
            (Some(name), Some("--admin")) => {
                Command::Admin(AdminCommand::AddUser { name, admin: true })
            }
            _ => Command::Bad(
                "usage: /adduser NAME [--admin] (the password is asked next, never on the command line)"
                    .into(),
            ),
        },
        "listusers" | "users" => Command::Admin(AdminCommand::ListUsers),
        "logoutuser" | "kick" => need(arg, |n| Command::Admin(AdminCommand::LogoutUser(n))),
        "lock" => need(arg, |n| Command::Admin(AdminCommand::Lock(n))),
        "unlock" => need(arg, |n| Command::Admin(AdminCommand::Unlock(n))),
        "shutdown" => Command::Admin(AdminCommand::Shutdown),
        "joke" => Command::Joke,
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
        assert_eq!(
            parse("/msg bianca  hi there "),
            Line::Command(Command::Msg("bianca".into(), " hi there ".into()))
        );
        assert_eq!(
            parse("@bianca hi"),
            Line::Command(Command::Msg("bianca".into(), "hi".into()))
        );
        assert_eq!(parse("@ nope"), Line::Text("@ nope".into()));
        assert!(matches!(
            parse("/whisper bianca"),
            Line::Command(Command::Bad(_))
        ));
        assert_eq!(parse("/leave"), Line::Command(Command::Leave(None)));
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

    #[test]
    fn admin_commands_never_take_a_password_argument() {
        let admin = |line: &str| match parse(line) {
            Line::Command(Command::Admin(cmd)) => Some(cmd),
            _ => None,
        };
        assert_eq!(
            admin("/adduser carla"),
            Some(AdminCommand::AddUser {
                name: "carla".into(),
                admin: false
            })
        );
        assert_eq!(
            admin("/adduser carla --admin"),
            Some(AdminCommand::AddUser {
                name: "carla".into(),
                admin: true
            })
        );
        assert_eq!(admin("/adduser carla s3cret-password"), None);
        assert_eq!(admin("/listusers"), Some(AdminCommand::ListUsers));
        assert_eq!(
            admin("/logoutuser bianca"),
            Some(AdminCommand::LogoutUser("bianca".into()))
        );
        assert_eq!(
            admin("/lock bianca"),
            Some(AdminCommand::Lock("bianca".into()))
        );
        assert_eq!(
            admin("/unlock bianca"),
            Some(AdminCommand::Unlock("bianca".into()))
        );
        assert_eq!(admin("/shutdown"), Some(AdminCommand::Shutdown));
        assert!(matches!(parse("/lock"), Line::Command(Command::Bad(_))));
    }
}
