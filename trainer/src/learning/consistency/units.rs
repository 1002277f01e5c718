//! Information units U(y) of a response (`research/algorithms.md` §5.2, "Information units"): a
//! deterministic, versioned extractor from a table of known items with aliases and from regular
//! expressions, every unit canonicalised.
//!
//! # Canonical form ([`canonical_unit`])
//! Lower-cased (Unicode), every character that is not a letter or digit (punctuation, symbols,
//! whitespace) turned into a separator, runs of separators collapsed to one space, ends trimmed:
//! `"  S&P-500 Index!"` → `"s p 500 index"`. No other Unicode normalisation is applied.
//!
//! # Extraction ([`UnitExtractor::extract`])
//! 1. **Items.** The response is canonicalised into words, and the item table's aliases (each item's
//!    unit name is an alias too) are matched as whole-word sequences, scanning left to right and
//!    taking the longest alias at each position; matches do not overlap. Each match yields its
//!    item's unit.
//! 2. **Patterns.** Each regular expression runs on the *raw* response (so a pattern may be
//!    case-sensitive, e.g. upper-case tickers; write `(?i)` for case-insensitive); each whole match
//!    is canonicalised, and yields the unit of the item it is an alias of, or else itself. Empty
//!    matches are skipped. The engine is `fancy-regex` (through `tokenizers`' `SysRegex`, the engine
//!    the trainer already splits text with): look-around is available, capture groups are not used
//!    (only the whole match counts), and a pattern whose backtracking exceeds the engine's limit
//!    stops matching at that point.
//!
//! U(y) is the set of units; order and repetition do not matter.
//!
//! # Table file (JSON, [`ExtractorSpec`])
//! ```json
//! {
//!   "name": "index-funds",
//!   "items": [
//!     {"unit": "VTI", "aliases": ["Vanguard Total Stock Market ETF", "Vanguard Total Stock Market"]},
//!     {"unit": "VXUS", "aliases": ["Vanguard Total International Stock ETF"]}
//!   ],
//!   "patterns": [
//!     {"name": "ticker", "regex": "(?<=\\$)[A-Z]{2,5}\\b"}
//!   ]
//! }
//! ```
//! Unknown fields are refused. Two items may not share a canonical unit or alias.
//!
//! # Version ([`UnitExtractor::version`])
//! `flywheel-units/1+sha256:<hex>`: the sha256 of [`EXTRACTOR_CODE_VERSION`], the regex engine and the
//! normalised table (units and aliases canonicalised, sorted and deduplicated; patterns sorted), so
//! it changes exactly when the extraction can change, and not with the file's layout, key order or
//! alias spelling variants that canonicalise alike. Record it with every reward.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokenizers::utils::SysRegex;

use crate::{Error, Result};

/// Version of this extraction code; bump it whenever [`canonical_unit`] or the matching rules change.
pub const EXTRACTOR_CODE_VERSION: &str = "flywheel-units/1";

/// The regex engine, part of the version hash.
const REGEX_ENGINE: &str = "fancy-regex via tokenizers 0.21 SysRegex";

/// A set of canonical information units.
pub type UnitSet = BTreeSet<String>;

/// The extractor's table: known items with aliases, and regular expressions.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractorSpec {
    /// A label for humans; not part of the version.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub items: Vec<ItemSpec>,
    #[serde(default)]
    pub patterns: Vec<PatternSpec>,
}

/// One known item: the unit it yields and the phrasings that name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemSpec {
    /// The unit (canonicalised on load); also matched as an alias.
    pub unit: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// A regular expression whose matches are units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternSpec {
    pub name: String,
    pub regex: String,
}

/// The canonical form of §5.2's units: lower case, non-alphanumerics as single spaces, trimmed.
pub fn canonical_unit(text: &str) -> String {
    words(text).join(" ")
}

/// The canonical words of `text`.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// A loaded, deterministic unit extractor.
#[derive(Debug)]
pub struct UnitExtractor {
    /// Canonical alias words → canonical unit.
    aliases: HashMap<Vec<String>, String>,
    longest_alias: usize,
    patterns: Vec<SysRegex>,
    version: String,
}

impl UnitExtractor {
    /// # Errors
    /// `Error::Setting` for an empty unit or alias, two items sharing a unit or an alias, or a
    /// regular expression that does not compile.
    pub fn new(spec: &ExtractorSpec) -> Result<Self> {
        let mut aliases: HashMap<Vec<String>, String> = HashMap::new();
        let mut units = BTreeSet::new();
        // Normalised table for the version: unit → sorted canonical aliases.
        let mut table: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for item in &spec.items {
            let unit = canonical_unit(&item.unit);
            if unit.is_empty() {
                return Err(Error::Setting(format!(
                    "unit table: item {:?} has no letters or digits",
                    item.unit
                )));
            }
            if !units.insert(unit.clone()) {
                return Err(Error::Setting(format!(
                    "unit table: unit {unit:?} appears twice"
                )));
            }
            let names = table.entry(unit.clone()).or_default();
            for alias in std::iter::once(&item.unit).chain(&item.aliases) {
                let key = words(alias);
                if key.is_empty() {
                    return Err(Error::Setting(format!(
                        "unit table: alias {alias:?} of {unit:?} has no letters or digits"
                    )));
                }
                match aliases.get(&key) {
                    Some(other) if *other != unit => {
                        return Err(Error::Setting(format!(
                            "unit table: alias {alias:?} names both {other:?} and {unit:?}"
                        )))
                    }
                    _ => {}
                }
                names.insert(key.join(" "));
                aliases.insert(key, unit.clone());
            }
        }
        let mut patterns: Vec<(String, String)> = Vec::new();
        let mut compiled = Vec::with_capacity(spec.patterns.len());
        for p in &spec.patterns {
            let regex = SysRegex::new(&p.regex).map_err(|e| {
                Error::Setting(format!("unit pattern {:?} ({:?}): {e}", p.name, p.regex))
            })?;
            compiled.push(regex);
            patterns.push((p.regex.clone(), p.name.clone()));
        }
        patterns.sort();
        let normalised = serde_json::json!({ "items": table, "patterns": patterns });
        let mut sha = Sha256::new();
        for part in [
            EXTRACTOR_CODE_VERSION,
            REGEX_ENGINE,
            &normalised.to_string(),
        ] {
            sha.update(part.as_bytes());
            sha.update(b"\n");
        }
        Ok(Self {
            longest_alias: aliases.keys().map(Vec::len).max().unwrap_or(0),
            aliases,
            patterns: compiled,
            version: format!(
                "{EXTRACTOR_CODE_VERSION}+sha256:{}",
                hex::encode(sha.finalize())
            ),
        })
    }

    /// Parses a JSON table ([`ExtractorSpec`]) and loads it.
    ///
    /// # Errors
    /// `Error::Setting` for JSON that is not a table, or as [`UnitExtractor::new`].
    pub fn from_json(json: &str) -> Result<Self> {
        let spec: ExtractorSpec = serde_json::from_str(json)
            .map_err(|e| Error::Setting(format!("unit table JSON: {e}")))?;
        Self::new(&spec)
    }

    /// Reads and loads a JSON table file.
    ///
    /// # Errors
    /// `Error::Setting` when the file cannot be read, or as [`UnitExtractor::from_json`].
    pub fn from_file(path: &Path) -> Result<Self> {
        let json = std::fs::read_to_string(path)
            .map_err(|e| Error::Setting(format!("unit table {}: {e}", path.display())))?;
        Self::from_json(&json)
    }

    /// `flywheel-units/<code version>+sha256:<hex>`; see the module docs.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// U(`response`): the canonical units of the table's items and the patterns' matches.
    pub fn extract(&self, response: &str) -> UnitSet {
        let mut units = UnitSet::new();
        let tokens = words(response);
        let mut i = 0;
        while i < tokens.len() {
            let longest = self.longest_alias.min(tokens.len() - i);
            let found = (1..=longest)
                .rev()
                .find_map(|n| self.aliases.get(&tokens[i..i + n]).map(|unit| (n, unit)));
            match found {
                Some((n, unit)) => {
                    units.insert(unit.clone());
                    i += n;
                }
                None => i += 1,
            }
        }
        for pattern in &self.patterns {
            for (start, end) in pattern.find_iter(response) {
                let key = words(&response[start..end]);
                if key.is_empty() {
                    continue;
                }
                let unit = match self.aliases.get(&key) {
                    Some(unit) => unit.clone(),
                    None => key.join(" "),
                };
                units.insert(unit);
            }
        }
        units
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FUNDS: &str = r#"{
        "name": "index-funds",
        "items": [
            {"unit": "VTI", "aliases": ["Vanguard Total Stock Market ETF", "Vanguard Total Stock Market"]},
            {"unit": "VXUS", "aliases": ["Vanguard Total International Stock ETF"]},
            {"unit": "BND", "aliases": ["Vanguard Total Bond Market ETF"]},
            {"unit": "S&P 500", "aliases": ["SP500", "Standard & Poor's 500"]}
        ],
        "patterns": [
            {"name": "ticker", "regex": "(?<=\\$)[A-Z]{2,5}\\b"},
            {"name": "percent", "regex": "\\d+(\\.\\d+)?%"}
        ]
    }"#;

    fn set(units: &[&str]) -> UnitSet {
        units.iter().map(|u| u.to_string()).collect()
    }

    #[test]
    fn canonical_form_lowercases_and_turns_punctuation_and_whitespace_into_single_spaces() {
        assert_eq!(canonical_unit("  S&P-500\tIndex!  "), "s p 500 index");
        assert_eq!(
            canonical_unit("Standard & Poor's\n500"),
            "standard poor s 500"
        );
        assert_eq!(canonical_unit("ÉTF  Zürich"), "étf zürich");
        assert_eq!(canonical_unit("?!  ..."), "");
    }

    #[test]
    fn items_match_whole_words_longest_alias_first_and_patterns_map_through_the_aliases() {
        let extractor = UnitExtractor::from_json(FUNDS).unwrap();
        let text = "Buy the VANGUARD total-stock market ETF, some $VXUS and an S&P 500 fund; \
                    bonds (vanguard total bond market etf) at 7.5% — not VTIX.";
        assert_eq!(
            extractor.extract(text),
            set(&["bnd", "s p 500", "vti", "vxus", "7 5"])
        );
        // "vanguard total stock market etf" is one unit, not "vanguard total stock market" + noise;
        // a ticker inside a longer word is not an alias match.
        assert_eq!(extractor.extract("VTIX and BNDs"), set(&[]));
        // Case-sensitive pattern: `$vxus` is not a ticker, but still an alias (case-insensitive).
        assert_eq!(extractor.extract("$vxus"), set(&["vxus"]));
        assert_eq!(extractor.extract(""), set(&[]));
    }

    #[test]
    fn a_pattern_match_that_is_no_alias_is_its_own_canonical_unit() {
        let spec = ExtractorSpec {
            patterns: vec![PatternSpec {
                name: "title".into(),
                regex: "(?i)senior [a-z]+ engineer".into(),
            }],
            ..ExtractorSpec::default()
        };
        let extractor = UnitExtractor::new(&spec).unwrap();
        assert_eq!(
            extractor.extract("A Senior Data Engineer, or a senior DATA engineer."),
            set(&["senior data engineer"])
        );
    }

    #[test]
    fn the_version_follows_the_normalised_table_not_its_layout() {
        let a = UnitExtractor::from_json(FUNDS).unwrap();
        let version = a.version();
        assert!(version.starts_with("flywheel-units/1+sha256:"), "{version}");
        assert_eq!(version.len(), "flywheel-units/1+sha256:".len() + 64);
        // Same table, other order, other spelling of the same canonical alias, other name.
        let b = UnitExtractor::from_json(
            r#"{"name": "renamed", "patterns": [
                   {"regex": "\\d+(\\.\\d+)?%", "name": "percent"},
                   {"name": "ticker", "regex": "(?<=\\$)[A-Z]{2,5}\\b"}],
                "items": [
                   {"unit": "s&p 500", "aliases": ["standard & poor's 500", "SP500"]},
                   {"unit": "bnd", "aliases": ["Vanguard  Total Bond Market ETF"]},
                   {"unit": "VXUS", "aliases": ["Vanguard Total International Stock ETF"]},
                   {"unit": "vti", "aliases": ["Vanguard Total Stock Market", "VANGUARD TOTAL STOCK MARKET ETF"]}]}"#,
        )
        .unwrap();
        assert_eq!(b.version(), version);
        // One more alias changes it.
        let mut spec: ExtractorSpec = serde_json::from_str(FUNDS).unwrap();
        spec.items[0].aliases.push("Total Market".into());
        assert_ne!(UnitExtractor::new(&spec).unwrap().version(), version);
        // So does a pattern.
        let mut spec: ExtractorSpec = serde_json::from_str(FUNDS).unwrap();
        spec.patterns.pop();
        assert_ne!(UnitExtractor::new(&spec).unwrap().version(), version);
    }

    #[test]
    fn ambiguous_or_empty_entries_bad_regexes_and_unknown_fields_are_refused() {
        let refused = |json: &str| matches!(UnitExtractor::from_json(json), Err(Error::Setting(_)));
        assert!(refused(
            r#"{"items": [{"unit": "A", "aliases": ["x"]}, {"unit": "B", "aliases": ["X!"]}]}"#
        ));
        assert!(refused(r#"{"items": [{"unit": "A"}, {"unit": "a"}]}"#));
        assert!(refused(r#"{"items": [{"unit": "--"}]}"#));
        assert!(refused(r#"{"items": [{"unit": "A", "aliases": ["..."]}]}"#));
        assert!(refused(r#"{"patterns": [{"name": "bad", "regex": "("}]}"#));
        assert!(refused(r#"{"items": [], "extra": 1}"#));
        assert!(refused("not json"));
        // The same alias twice for one item is fine.
        assert!(
            UnitExtractor::from_json(r#"{"items": [{"unit": "A", "aliases": ["a", "A."]}]}"#)
                .is_ok()
        );
    }

    #[test]
    fn a_table_file_loads_like_its_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("funds.json");
        std::fs::write(&path, FUNDS).unwrap();
        let from_file = UnitExtractor::from_file(&path).unwrap();
        assert_eq!(
            from_file.version(),
            UnitExtractor::from_json(FUNDS).unwrap().version()
        );
        assert!(matches!(
            UnitExtractor::from_file(&dir.path().join("missing.json")),
            Err(Error::Setting(_))
        ));
    }
}
