//! The likely key meant by a misspelt one, for "did you mean" hints.

/// The accepted key `key` is most likely a typo of: the same but for case, or
/// within two edits (one for keys of four characters or fewer).
///
/// ```
/// assert_eq!(cjm_core::did_you_mean("pakage", ["name", "package"]), Some("package"));
/// assert_eq!(cjm_core::did_you_mean("zzz", ["name", "package"]), None);
/// ```
pub fn did_you_mean<'a>(key: &str, accepted: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let budget = if key.chars().count() <= 4 { 1 } else { 2 };
    accepted
        .into_iter()
        .map(|known| {
            let distance = if known.eq_ignore_ascii_case(key) {
                0
            } else {
                edit_distance(key, known)
            };
            (distance, known)
        })
        .filter(|(distance, _)| *distance <= budget)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}
