//! Unknown configuration keys, and the known key a typo was probably meant to be.

/// The known key closest to `unknown`, when it is close enough to be a likely typo.
pub(crate) fn closest<'a>(unknown: &str, known: &'a [String]) -> Option<&'a str> {
    let unknown_lower = unknown.to_lowercase();
    known
        .iter()
        .map(|key| (edit_distance(&unknown_lower, &key.to_lowercase()), key))
        .filter(|(distance, key)| *distance <= typo_budget(key))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, key)| key.as_str())
}

/// How many edits still read as a typo: a third of the word, and at least two so
/// that short keys get one swapped pair of letters.
fn typo_budget(key: &str) -> usize {
    (key.chars().count() / 3).max(2)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("prefix", "prefix"), 0);
        assert_eq!(edit_distance("prefx", "prefix"), 1);
        assert_eq!(edit_distance("perfix", "prefix"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("é", "e"), 1);
    }

    #[test]
    fn closest_suggests_only_likely_typos() {
        let known = vec![String::from("prefix"), String::from("chunk_bytes")];
        assert_eq!(closest("prefx", &known), Some("prefix"));
        assert_eq!(closest("Prefix", &known), Some("prefix"));
        assert_eq!(closest("chunkbytes", &known), Some("chunk_bytes"));
        assert_eq!(closest("colour", &known), None);
        assert_eq!(closest("x", &[]), None);
    }
}
