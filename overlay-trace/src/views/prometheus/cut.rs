//! A /metrics body kept under a size: whole series are left out, the largest first, so that what
//! remains is still a valid exposition (every family's HELP and TYPE, every kept series with all
//! its buckets, `# EOF`). Only run when a body is over the size, which `--max-series` makes rare;
//! the number of series left out is counted on /metrics.

use std::collections::HashMap;

/// Labels that vary among one container's samples: a bucket's bound, a lookup's outcome.
const WITHIN_SERIES: [&str; 3] = ["le=", "quantile=", "outcome="];

/// `body` (OpenMetrics text) cut to at most `max` bytes, and how many series were left out;
/// None when it fits already. A series is a label set (`WITHIN_SERIES` aside) across every
/// family: a container's histograms and counters go or stay together.
pub fn cut_to(body: &str, max: usize) -> Option<(String, u64)> {
    if body.len() <= max {
        return None;
    }
    // Bytes per series, and what every body keeps (comments, and the series without labels: the
    // tracer's own totals and the mounts no runtime claims, one bounded series). A series is
    // sized by its names and labels, not its values, so which ones go does not change as
    // counters grow a digit.
    let mut sizes: HashMap<String, usize> = HashMap::new();
    let mut kept_anyway = 0;
    for line in body.split_inclusive('\n') {
        match series_of(line).filter(|k| !k.is_empty()) {
            Some(key) => {
                let named = line.rfind(' ').unwrap_or(line.len());
                *sizes.entry(key).or_default() += named;
                // Room for the values is kept aside, the cut series' too: the body stays under
                // `max` whatever the values.
                kept_anyway += line.len() - named;
            }
            None => kept_anyway += line.len(),
        }
    }
    // The smallest series first (the tracer's own labelled totals, then containers by the size
    // of their labels), names breaking ties: as many as fit.
    let mut by_size: Vec<(&String, &usize)> = sizes.iter().collect();
    by_size.sort_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)));
    let mut room = max.saturating_sub(kept_anyway);
    let mut keep = std::collections::HashSet::new();
    for (key, size) in by_size {
        if *size > room {
            break;
        }
        room -= size;
        keep.insert(key.clone());
    }
    let left_out = (sizes.len() - keep.len()) as u64;
    let mut out = String::with_capacity(max.min(body.len()));
    for line in body.split_inclusive('\n') {
        if series_of(line).is_none_or(|k| k.is_empty() || keep.contains(&k)) {
            out.push_str(line);
        }
    }
    Some((out, left_out))
}

/// The label set of a sample line without its `WITHIN_SERIES` labels (None for a comment or a
/// sample without labels). Quoted values are skipped whole, escapes included, so a value
/// that looks like a label cannot split a series.
fn series_of(line: &str) -> Option<String> {
    if line.starts_with('#') {
        return None;
    }
    let open = line.find('{')?;
    if line[..open].contains(' ') {
        return None;
    }
    let mut key = String::new();
    let mut label_start = open + 1;
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in line.char_indices().skip_while(|(i, _)| *i <= open) {
        if quoted {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' | '}' => {
                let label = &line[label_start..i];
                if !WITHIN_SERIES.iter().any(|l| label.starts_with(l)) {
                    key.push_str(label);
                    key.push(',');
                }
                label_start = i + 1;
                if c == '}' {
                    return Some(key);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "# HELP overlay_trace_copy_ups Copy-ups.\n\
# TYPE overlay_trace_copy_ups counter\n\
overlay_trace_copy_ups_total{container=\"big\",image=\"a\"} 5\n\
overlay_trace_copy_ups_total{container=\"small\"} 1\n\
# TYPE overlay_trace_copy_up_seconds histogram\n\
overlay_trace_copy_up_seconds_bucket{container=\"big\",image=\"a\",le=\"0.1\"} 1\n\
overlay_trace_copy_up_seconds_bucket{container=\"big\",image=\"a\",le=\"+Inf\"} 5\n\
overlay_trace_copy_up_seconds_bucket{container=\"small\",le=\"+Inf\"} 1\n\
overlay_trace_up 1\n\
# EOF\n";

    #[test]
    fn a_body_that_fits_is_left_alone() {
        assert!(cut_to(BODY, BODY.len()).is_none());
    }

    #[test]
    fn the_largest_series_goes_whole_and_is_counted() {
        let (cut, left_out) = cut_to(BODY, BODY.len() - 1).unwrap();
        assert_eq!(left_out, 1);
        assert!(!cut.contains("big"), "{cut}");
        assert!(cut.contains("container=\"small\",le=\"+Inf\"} 1"));
        // Every family's header, the unlabelled sample and the end stay.
        for kept in [
            "# HELP",
            "# TYPE overlay_trace_copy_up_seconds",
            "overlay_trace_up 1",
            "# EOF",
        ] {
            assert!(cut.contains(kept), "{kept}");
        }
        assert!(cut.len() < BODY.len());
    }

    #[test]
    fn the_series_without_labels_is_never_cut_in_part() {
        // The mounts no runtime claims: their buckets have only `le`, their sum and count no
        // braces at all.
        let body = "m_bucket{le=\"+Inf\"} 1\nm_sum 1\nm_count 1\nm_bucket{c=\"a-long-name\",le=\"+Inf\"} 1\n# EOF\n";
        let (cut, left_out) = cut_to(body, body.len() - 1).unwrap();
        assert_eq!(left_out, 1);
        assert_eq!(cut, "m_bucket{le=\"+Inf\"} 1\nm_sum 1\nm_count 1\n# EOF\n");
    }

    #[test]
    fn a_value_that_looks_like_labels_does_not_split_its_series() {
        let line = "m_bucket{c=\"x\\\",le=\\\"1\",d=\"}\",le=\"2\"} 1\n";
        assert_eq!(series_of(line).unwrap(), "c=\"x\\\",le=\\\"1\",d=\"}\",");
    }
}
