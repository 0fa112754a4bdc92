//! Bounded text for Kubernetes fields (Event notes, condition messages, label values,
//! ConfigMap keys), cut and cleaned the same way by the operator and the receiver.

/// The longest prefix of `s` that is at most `max` bytes and ends on a character boundary.
pub fn prefix_within(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// At most `max` characters of `s`, each letter, digit, `-`, `.` or `_` kept and any other
/// replaced by `_`: what label values and ConfigMap keys may hold.
pub fn key_chars(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_character_boundaries_and_cleans_keys() {
        assert_eq!(prefix_within("abc", 10), "abc");
        assert_eq!(prefix_within("abcdef", 3), "abc");
        // "é" is two bytes: a cut in its middle moves before it
        assert_eq!(prefix_within("aé", 2), "a");
        assert_eq!(prefix_within("", 0), "");
        assert_eq!(key_chars("issues.opened", 63), "issues.opened");
        assert_eq!(key_chars("a b/c", 63), "a_b_c");
        assert_eq!(key_chars("ééé", 2), "__");
    }
}
