//! Every Cedar example of `policy/README.md` (the ```cedar blocks) is a valid
//! policy set under strict validation against the mesh schema.

use std::str::FromStr;

use cedar_policy::{PolicySet, ValidationMode, Validator};

#[test]
fn the_readme_examples_validate_against_the_schema() {
    let readme = include_str!("../../README.md");
    let blocks: Vec<&str> = readme
        .split("```cedar\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .collect();
    assert!(blocks.len() >= 10, "found {} blocks", blocks.len());
    let validator = Validator::new(palisade_authz::schema().unwrap());
    for block in blocks {
        let set = PolicySet::from_str(block).unwrap_or_else(|e| panic!("{e:?}\n{block}"));
        let result = validator.validate(&set, ValidationMode::Strict);
        let problems: Vec<String> = (result.validation_errors().map(ToString::to_string))
            .chain(result.validation_warnings().map(ToString::to_string))
            .collect();
        assert!(problems.is_empty(), "{problems:?}\n{block}");
        for policy in set.policies() {
            assert!(policy.annotation("id").is_some(), "no @id:\n{block}");
        }
    }
}
