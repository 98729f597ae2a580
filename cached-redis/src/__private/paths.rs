//! The start of a derived key: the path of the cached function, found from the type name of a
//! closure written inside it or inside one of its helpers.

/// The path of the function that the closure `here` is written in, as the compiler names it
/// (`app::users::UserRepo::by_id`, `app::setting<u32>`): the start of a derived key, unique per
/// function and per instance of a generic one.
pub fn function_path<F>(here: &F) -> &'static str {
    let _ = here;
    let mut path = std::any::type_name::<F>();
    while let Some(outer) = path.strip_suffix("::{{closure}}") {
        path = outer;
    }
    path
}

/// [`function_path`] from inside a generated helper named `helper` (`invalidate_by_id`): the
/// path of the cached function `function` (`by_id`) beside it.
pub fn helper_function_path<F>(here: &F, helper: &str, function: &str) -> String {
    let path = function_path(here);
    let marker = format!("::{helper}");
    match segment_at_top_level(path, &marker) {
        Some(at) => format!("{}::{function}{}", &path[..at], &path[at + marker.len()..]),
        None => path.to_owned(),
    }
}

/// [`helper_function_path`] from inside `update_*`, whose path shows two generic arguments
/// of its own: the value's type, right after the function's `own` arguments, and the closure's
/// type, last (an `impl Trait` argument's type follows the explicit ones). Both are dropped.
pub fn update_function_path<F>(here: &F, helper: &str, function: &str, own: usize) -> String {
    let path = function_path(here);
    let marker = format!("::{helper}");
    let Some(at) = segment_at_top_level(path, &marker) else {
        return path.to_owned();
    };
    let head = &path[..at];
    let rest = &path[at + marker.len()..];
    let Some((mut args, after)) = rest.strip_prefix('<').and_then(generic_arguments) else {
        return format!("{head}::{function}{rest}");
    };
    args.pop();
    if own < args.len() {
        args.remove(own);
    }
    if args.is_empty() {
        format!("{head}::{function}{after}")
    } else {
        format!("{head}::{function}<{}>{after}", args.join(", "))
    }
}

/// Where the path segment `marker` (`::name`) is, outside any generic list (a closure's type
/// among a helper's generic arguments can name a function that starts the same), and not the
/// start of a longer name.
fn segment_at_top_level(path: &str, marker: &str) -> Option<usize> {
    let (mut depth, mut previous, mut found) = (0usize, ' ', None);
    for (i, c) in path.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' if previous == '-' => {}
            '>' | ')' | ']' => depth = depth.saturating_sub(1),
            ':' if depth == 0 && path[i..].starts_with(marker) => {
                let next = path[i + marker.len()..].chars().next();
                if next.is_none_or(|n| !(n.is_alphanumeric() || n == '_')) {
                    found = Some(i);
                }
            }
            _ => {}
        }
        previous = c;
    }
    found
}

/// The top-level arguments of a generic list (after its `<`) and what follows its `>`.
fn generic_arguments(list: &str) -> Option<(Vec<&str>, &str)> {
    let (mut depth, mut start, mut previous) = (0usize, 0, ' ');
    let mut args = Vec::new();
    for (i, c) in list.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            // `->` of a function type is no bracket.
            '>' if previous == '-' => {}
            '>' | ')' | ']' if depth > 0 => depth -= 1,
            '>' => {
                args.push(list[start..i].trim());
                return Some((args, &list[i + 1..]));
            }
            ',' if depth == 0 => {
                args.push(list[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        previous = c;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::generic_arguments;

    #[test]
    fn a_helper_is_found_by_its_own_segment_only() {
        use super::segment_at_top_level;
        let path = "app::update_get<app::P, app::update_get_sets::{{closure}}>";
        assert_eq!(segment_at_top_level(path, "::update_get"), Some(3));
        assert_eq!(
            segment_at_top_level("app::update_get_x", "::update_get"),
            None
        );
        assert_eq!(
            segment_at_top_level("a::b<fn() -> u8>::update_get", "::update_get"),
            Some(16)
        );
    }

    #[test]
    fn generic_lists_split_at_their_top_level() {
        let (args, after) =
            generic_arguments("u8, fn(u8) -> u8, Vec<(u8, [u8; 2])>, x::{{closure}}>::y").unwrap();
        assert_eq!(
            args,
            ["u8", "fn(u8) -> u8", "Vec<(u8, [u8; 2])>", "x::{{closure}}"]
        );
        assert_eq!(after, "::y");
        assert!(generic_arguments("u8, v").is_none());
    }
}
