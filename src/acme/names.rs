//! What a managed certificate is called: its storage key from its names
//! (`example.com`, `_wildcard.example.com`, `example.com+1a2b3c4d` for
//! several), the name it is looked up by again, and name-set equality.

/// The storage name of a certificate for `names`: the name itself for one
/// name (`*` spelled `_wildcard`), else the first name and a hash of all.
pub fn cert_key(names: &[String]) -> String {
    let first = names.first().map(String::as_str).unwrap_or("none").replace('*', "_wildcard");
    if names.len() <= 1 {
        return first;
    }
    let mut sorted = names.to_vec();
    sorted.sort();
    // FNV-1a: stable across builds, unlike the std hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sorted.join(",").bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    format!("{first}+{:08x}", h as u32)
}

/// The name to look a certificate up by in the live map, from its key.
pub fn key_name(key: &str) -> String {
    key.split('+').next().unwrap_or(key).replace("_wildcard", "*")
}

/// Whether two name lists are the same set.
pub fn same_names(a: &[String], b: &[String]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort();
    b.sort();
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let one = vec!["a.test".to_string()];
        assert_eq!(cert_key(&one), "a.test");
        let wild = vec!["*.a.test".to_string()];
        assert_eq!(cert_key(&wild), "_wildcard.a.test");
        assert_eq!(key_name("_wildcard.a.test"), "*.a.test");
        let both = vec!["a.test".to_string(), "*.a.test".to_string()];
        let swapped = vec!["*.a.test".to_string(), "a.test".to_string()];
        assert!(cert_key(&both).starts_with("a.test+"));
        let hash = |k: String| k.split_once('+').map(|(_, h)| h.to_string());
        assert_eq!(hash(cert_key(&both)), hash(cert_key(&swapped)), "the same set, the same hash");
        assert_eq!(key_name(&cert_key(&both)), "a.test");
        assert!(same_names(&both, &swapped) && !same_names(&both, &one));
    }
}
