//! The host's ephemeral port range, which the UDP reply check uses to tell
//! a remote client (asking from an ephemeral port) from a service.

use std::path::Path;

/// Where Linux keeps the range (of the agent's network namespace).
const RANGE_FILE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// Linux's default, used when the file cannot be read.
pub const DEFAULT: EphemeralPorts = EphemeralPorts {
    first: 32768,
    last: 60999,
};

/// An inclusive range of ports the kernel hands out to unbound sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EphemeralPorts {
    pub first: u32,
    pub last: u32,
}

impl EphemeralPorts {
    /// The range of this host, or Linux's default if it cannot be read.
    pub fn of_host() -> Self {
        Self::read(Path::new(RANGE_FILE)).unwrap_or_else(|| {
            tracing::warn!(
                file = RANGE_FILE,
                "unreadable; assuming the default ephemeral port range"
            );
            DEFAULT
        })
    }

    fn read(path: &Path) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(path).ok()?)
    }

    /// `"32768\t60999\n"`: two ports, the first not above the second.
    fn parse(text: &str) -> Option<Self> {
        let mut ports = text.split_whitespace().map(str::parse::<u16>);
        let (Some(Ok(first)), Some(Ok(last)), None) = (ports.next(), ports.next(), ports.next())
        else {
            return None;
        };
        (first <= last).then_some(Self {
            first: u32::from(first),
            last: u32::from(last),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_proc_file_format() {
        assert_eq!(
            EphemeralPorts::parse("32768\t60999\n"),
            Some(EphemeralPorts {
                first: 32768,
                last: 60999
            })
        );
        assert_eq!(
            EphemeralPorts::parse("1024 1024"),
            Some(EphemeralPorts {
                first: 1024,
                last: 1024
            })
        );
    }

    #[test]
    fn rejects_what_is_not_a_range() {
        for bad in ["", "32768", "60999 32768", "1 2 3", "a b", "70000 80000"] {
            assert_eq!(EphemeralPorts::parse(bad), None, "{bad:?}");
        }
    }
}
