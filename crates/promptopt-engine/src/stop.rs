//! Stop strings and shared prefixes: the small pieces of text logic the decode loop relies on.

/// The byte offset of the earliest stop string in `output`, looking only at matches that end
/// after `new_from` (the first byte added since the last check).
pub(crate) fn find_stop(output: &[u8], stops: &[Vec<u8>], new_from: usize) -> Option<usize> {
    let mut earliest: Option<usize> = None;
    for stop in stops.iter().filter(|s| !s.is_empty()) {
        let start = new_from.saturating_sub(stop.len() - 1);
        if output.len() < start + stop.len() {
            continue;
        }
        if let Some(at) = output[start..]
            .windows(stop.len())
            .position(|window| window == stop.as_slice())
        {
            let at = start + at;
            earliest = Some(earliest.map_or(at, |e| e.min(at)));
        }
    }
    earliest
}

/// The number of leading items two slices share.
pub(crate) fn common_prefix<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn a_stop_split_across_tokens_is_found() {
        let s = stops(&["\n\n", "END"]);
        assert_eq!(find_stop(b"positive\n", &s, 8), None);
        assert_eq!(find_stop(b"positive\n\n", &s, 9), Some(8));
        assert_eq!(find_stop(b"abcEN", &s, 3), None);
        assert_eq!(find_stop(b"abcEND", &s, 5), Some(3));
    }

    #[test]
    fn the_earliest_stop_wins_and_old_text_is_not_searched_again() {
        let s = stops(&["b", "cd"]);
        assert_eq!(find_stop(b"xxcdb", &s, 2), Some(2));
        assert_eq!(find_stop(b"bxx", &s, 2), None);
        assert_eq!(find_stop(b"x", &stops(&[""]), 0), None);
    }

    #[test]
    fn common_prefix_counts_shared_items() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4, 5]), 2);
        assert_eq!(common_prefix::<i32>(&[], &[1]), 0);
        assert_eq!(common_prefix(&[7, 8], &[7, 8]), 2);
    }
}
