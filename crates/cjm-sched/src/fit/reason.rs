//! Why a call waits, or why it can never run, in words a person can act on:
//! what it needs, what is free, what holds the rest, and what it waits for.

use std::fmt;

use super::view::Activity;
use crate::amount::show;
use crate::footprint::Footprint;

/// Something that holds memory a waiting call needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its instance id.
    pub instance: String,
    /// What it is doing.
    pub activity: Activity,
    /// What it holds (or has reserved) on the axis the call is short of.
    pub bytes: u64,
}

/// What a waiting call waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitFor {
    /// A call of one of these instances to finish (they hold what is missing).
    Calls(Vec<String>),
    /// Memory freed by evicting these instances to come back.
    Memory {
        /// The instances evicted.
        from: Vec<String>,
        /// How much has come back so far.
        back_bytes: u64,
        /// How much is expected to.
        expected_bytes: u64,
    },
    /// One of the instance's own calls to finish: it runs as many as its cap.
    ConcurrencySlot {
        /// Calls it runs now.
        running: usize,
        /// Its `max_concurrent_requests`.
        cap: usize,
    },
    /// A worker to become idle: as many are loaded as allowed, none idle.
    WorkerSlot {
        /// The limit.
        max: usize,
    },
    /// Its own eviction to finish (it then loads again).
    OwnEviction,
    /// Memory that processes outside cjm hold to be freed.
    Outside,
}

/// Which memory a call is short of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Short {
    /// RAM.
    Ram,
    /// GPU memory on this device.
    Gpu {
        /// Its index.
        index: u32,
        /// Its name.
        name: String,
    },
}

/// Why a call waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    /// The instance the call is for.
    pub instance: String,
    /// What it waits for.
    pub waits_for: WaitFor,
    /// The memory it is short of, with what it needs and what is free of it
    /// (none for the slot waits).
    pub short: Option<(Short, u64, u64)>,
    /// What holds the rest of that memory, largest first.
    pub holders: Vec<Holder>,
}

/// Why a call can never run on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Never {
    /// It needs a GPU and there is none.
    NoGpu {
        /// The instance.
        instance: String,
        /// Why there is none.
        reason: String,
    },
    /// It needs more GPU memory than any device could ever give.
    Gpu {
        /// The instance.
        instance: String,
        /// What it needs.
        needs_bytes: u64,
        /// The best device.
        index: u32,
        /// Its name.
        name: String,
        /// Its memory in all.
        total_bytes: u64,
        /// What it could give: free plus everything cjm's other workers hold there.
        ever_bytes: u64,
    },
    /// It needs more RAM than the machine could ever give.
    Ram {
        /// The instance.
        instance: String,
        /// What it needs.
        needs_bytes: u64,
        /// Free now.
        free_bytes: u64,
        /// What cjm's other workers hold.
        held_bytes: u64,
    },
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = &self.instance;
        match &self.waits_for {
            WaitFor::ConcurrencySlot { running, cap } => {
                let s = if *running == 1 { "" } else { "s" };
                return write!(
                    f,
                    "{who} waits for a free slot: it runs {running} call{s} already, its limit \
                     (max_concurrent_requests {cap}); it starts when one of them finishes"
                );
            }
            WaitFor::WorkerSlot { max } => {
                return write!(
                    f,
                    "{who} waits for a worker: {max} are loaded, the most allowed (max_workers), \
                     and none is idle; it starts when one can be evicted"
                );
            }
            WaitFor::OwnEviction => {
                return write!(
                    f,
                    "{who} waits: it is being evicted, and loads again when that finishes"
                );
            }
            WaitFor::Calls(_) | WaitFor::Memory { .. } | WaitFor::Outside => {}
        }
        write!(f, "{who} waits for memory")?;
        if let Some((short, needs, free)) = &self.short {
            match short {
                Short::Ram => write!(
                    f,
                    ": it needs {} of RAM and {} is free",
                    show(*needs),
                    show(*free)
                )?,
                Short::Gpu { index, name } => write!(
                    f,
                    ": it needs {} of GPU memory on GPU {index} ({name}) and {} is free there",
                    show(*needs),
                    show(*free)
                )?,
            }
        }
        if !self.holders.is_empty() {
            let list: Vec<String> = self
                .holders
                .iter()
                .map(|h| format!("{} ({}, {})", h.instance, h.activity.words(), show(h.bytes)))
                .collect();
            write!(
                f,
                "; {} hold{} the rest",
                join(&list, "and"),
                if list.len() == 1 { "s" } else { "" }
            )?;
        }
        match &self.waits_for {
            WaitFor::Calls(instances) => {
                write!(
                    f,
                    "; it starts when a call of {} finishes",
                    join(instances, "or")
                )
            }
            WaitFor::Memory {
                from,
                back_bytes,
                expected_bytes,
            } => write!(
                f,
                "; it starts when the memory freed by evicting {} comes back ({} of {} back so far)",
                join(from, "and"),
                show(*back_bytes),
                show(*expected_bytes)
            ),
            WaitFor::Outside => write!(f, "; it starts when processes outside cjm free memory"),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Never {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoGpu { instance, reason } => write!(
                f,
                "{instance} can never run here: it needs a GPU and there is none ({reason}); \
                 run it on a machine with a GPU"
            ),
            Self::Gpu {
                instance,
                needs_bytes,
                index,
                name,
                total_bytes,
                ever_bytes,
            } => write!(
                f,
                "{instance} can never run here: it needs {} of GPU memory and the most any GPU \
                 could give is {} (GPU {index}, {name}, {} in all); lower its footprint \
                 (resources.min_gpu_vram_mb, or a smaller model in its config) or use a larger GPU",
                show(*needs_bytes),
                show(*ever_bytes),
                show(*total_bytes)
            ),
            Self::Ram {
                instance,
                needs_bytes,
                free_bytes,
                held_bytes,
            } => write!(
                f,
                "{instance} can never run here: it needs {} of RAM and this machine could give \
                 at most {} ({} free now and {} its other workers hold); lower its footprint \
                 (resources.min_system_ram_mb, or its config) or free memory outside cjm",
                show(*needs_bytes),
                show(free_bytes + held_bytes),
                show(*free_bytes),
                show(*held_bytes)
            ),
        }
    }
}

impl std::error::Error for Never {}

impl Never {
    /// The instance it is about.
    pub fn instance(&self) -> &str {
        match self {
            Self::NoGpu { instance, .. }
            | Self::Gpu { instance, .. }
            | Self::Ram { instance, .. } => instance,
        }
    }
}

/// "a", "a and b", "a, b and c".
fn join(items: &[String], word: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} {word} {last}", rest.join(", ")),
    }
}

/// The memory a footprint names on one axis.
pub(crate) fn on(short: &Short, fp: Footprint) -> u64 {
    match short {
        Short::Ram => fp.ram_bytes,
        Short::Gpu { .. } => fp.vram_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_as_english() {
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(join(&s(&[]), "and"), "");
        assert_eq!(join(&s(&["a"]), "and"), "a");
        assert_eq!(join(&s(&["a", "b"]), "or"), "a or b");
        assert_eq!(join(&s(&["a", "b", "c"]), "and"), "a, b and c");
    }
}
