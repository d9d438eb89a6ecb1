//! Giving back the pages of startup code once a worker idles.
//!
//! Most of an idle worker's resident memory is not its own: it is code and read-only
//! data mapped from its binary and from libc, which the kernel maps in windows (64
//! KiB by default) around every page touched. Starting touches much that serving never
//! runs again (parsing arguments, checking the configuration schema, building the
//! runtime, tracing's setup). Those pages stay mapped, and counted in the worker's
//! RSS, for as long as it lives.
//!
//! So, once, when the worker first sits idle, it unmaps the clean file-backed pages it
//! holds (`madvise(MADV_DONTNEED)` on mappings that are not writable and hold no
//! private copy of anything). The pages stay in the page cache, shared with every
//! other process of the same binary; the worker maps back, through minor faults, only
//! what it runs from then on. Nothing is lost: a clean page of a file mapping reads the
//! same from the file again. A mapping that was ever written (relocated data made
//! read-only afterwards: `Anonymous` above zero in smaps) is never touched, as its
//! contents are in memory only; nor is any mapping of a library a plugin may load or
//! unload while the worker runs (see `lives_as_long_as_the_process`).

use std::path::Path;

/// Unmap the clean file-backed pages of this process (see the module's text). Best
/// effort: a mapping that cannot be read about or released is left as it is.
pub(crate) fn release_clean_file_pages() {
    #[cfg(target_os = "linux")]
    {
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return;
        };
        let own = std::env::current_exe().ok();
        let mut released = 0usize;
        for mapping in clean_file_mappings(&smaps, own.as_deref()) {
            // SAFETY: the range is a whole mapping of this process, read-only and
            // file-backed with no anonymous (private, written) page, as smaps said a
            // moment ago: dropping its pages only makes the kernel read them from the
            // file again when they are next touched.
            let outcome = unsafe {
                libc::madvise(
                    mapping.start as *mut libc::c_void,
                    mapping.len,
                    libc::MADV_DONTNEED,
                )
            };
            if outcome == 0 {
                released += mapping.len;
            }
        }
        tracing::debug!("released the mappings of {released} bytes of clean file pages");
    }
}

/// One mapping of `/proc/self/smaps` that may be released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mapping {
    start: usize,
    len: usize,
}

/// The mappings in smaps text that may be released: readable, not writable, private,
/// of a file that stays mapped for the whole life of the process (the worker's own
/// binary, given as `own`, and the C library's parts the loader mapped at start:
/// their address ranges are never handed to anything else, so no mapping made since
/// smaps was read can be hit), with no page written or swapped.
fn clean_file_mappings(smaps: &str, own: Option<&Path>) -> Vec<Mapping> {
    let mut found = Vec::new();
    let mut current: Option<Mapping> = None;
    let mut clean = false;
    for line in smaps.lines() {
        if let Some(header) = mapping_header(line, own) {
            if let (Some(mapping), true) = (current.take(), clean) {
                found.push(mapping);
            }
            current = header;
            clean = header.is_some();
            continue;
        }
        // Pages of the mapping that exist in memory (or swap) alone: copies made on
        // write. (Its `_Dirty` figures also count file pages not yet written back,
        // as in a binary just linked: those are the file's, and safe to unmap.)
        for field in ["Anonymous:", "Swap:"] {
            if let Some(kib) = line.strip_prefix(field) {
                if kib.trim().trim_end_matches("kB").trim() != "0" {
                    clean = false;
                }
            }
        }
    }
    if let (Some(mapping), true) = (current, clean) {
        found.push(mapping);
    }
    found
}

/// `Some(Some(mapping))` for the header line of a mapping that may be released,
/// `Some(None)` for that of any other mapping, `None` for a line that is no header.
fn mapping_header(line: &str, own: Option<&Path>) -> Option<Option<Mapping>> {
    let mut fields = line.split_ascii_whitespace();
    let range = fields.next()?;
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = fields.next()?;
    let (_offset, _device) = (fields.next()?, fields.next()?);
    let inode = fields.next()?;
    let path = fields.next().unwrap_or("");
    let perms = perms.as_bytes();
    let eligible = perms.len() == 4
        && perms[0] == b'r'
        && perms[1] != b'w'
        && perms[3] == b'p'
        && inode != "0"
        && lives_as_long_as_the_process(path, own)
        && end > start;
    Some(eligible.then_some(Mapping {
        start,
        len: end - start,
    }))
}

/// The worker's binary, and glibc's libraries that its loader maps before `main` and
/// never unmaps.
fn lives_as_long_as_the_process(path: &str, own: Option<&Path>) -> bool {
    if !path.starts_with('/') {
        return false;
    }
    if own.is_some_and(|own| Path::new(path) == own) {
        return true;
    }
    let file = path.rsplit('/').next().unwrap_or("");
    [
        "libc.so",
        "libm.so",
        "ld-linux",
        "libgcc_s.so",
        "libpthread.so",
        "libdl.so",
    ]
    .iter()
    .any(|library| file.starts_with(library))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
5555e000-5556a000 r--p 00000000 fd:01 1234  /usr/bin/cjm-echo
Size:                 48 kB
Anonymous:             0 kB
5556a000-555ff000 r-xp 0000c000 fd:01 1234  /usr/bin/cjm-echo
Anonymous:             0 kB
555ff000-55610000 r--p 000a1000 fd:01 1234  /usr/bin/cjm-echo
Anonymous:            68 kB
55610000-55611000 rw-p 000b2000 fd:01 1234  /usr/bin/cjm-echo
Anonymous:             4 kB
7f000000-7f021000 rw-p 00000000 00:00 0 
Anonymous:           132 kB
7f100000-7f128000 r--p 00000000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f128000-7f129000 ---p 00028000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7fff0000-7fff2000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
7f200000-7f201000 r--s 00000000 00:05 77 /dev/shm/shared
Anonymous:             0 kB
7f300000-7f340000 r-xp 00000000 fd:01 55 /usr/lib/libcudart.so.12
Anonymous:             0 kB
7f400000-7f410000 r-xp 00000000 fd:01 99 /usr/lib/x86_64-linux-gnu/libm.so.6
Anonymous:             0 kB
Swap:                  4 kB
";

    #[test]
    fn only_clean_private_read_only_file_mappings_are_released() {
        assert_eq!(
            clean_file_mappings(SMAPS, Some(Path::new("/usr/bin/cjm-echo"))),
            [
                Mapping {
                    start: 0x5555e000,
                    len: 0xc000
                },
                Mapping {
                    start: 0x5556a000,
                    len: 0x95000
                },
                Mapping {
                    start: 0x7f100000,
                    len: 0x28000
                },
            ]
        );
    }

    #[test]
    fn text_that_is_not_smaps_releases_nothing() {
        assert_eq!(clean_file_mappings("", None), []);
        assert_eq!(
            clean_file_mappings("garbage\nAnonymous: 0 kB\nzz-yy r--p", None),
            []
        );
        // Without knowing its own binary, only the C library's mappings are released.
        let libc_only = clean_file_mappings(SMAPS, None);
        assert_eq!(libc_only.len(), 1);
        assert_eq!(libc_only[0].start, 0x7f100000);
    }

    #[test]
    fn this_process_keeps_running_after_its_pages_are_released() {
        release_clean_file_pages();
        // Code, read-only data and libc all come back from their files when touched.
        let text = format!("{:?}", (1..5).map(|n| n * 2).collect::<Vec<_>>());
        assert_eq!(text, "[2, 4, 6, 8]");
    }
}
