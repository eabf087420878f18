use super::*;

/// A configuration: one reactor, `bdevs` and `scst` as TOML.
fn config(bdevs: &str, scst: &str) -> ServeConfig {
    let text = format!("[reactors]\ncores = [0]\n\n{bdevs}\n{scst}\n");
    let c = ServeConfig::parse(&text).unwrap();
    c.validate(&[0]).unwrap();
    c
}

const RAM: &str = r#"
[[bdev]]
name = "r0"
type = "ram"
size = "4MiB"

[[bdev]]
name = "r1"
type = "ram"
size = "4MiB"

[[bdev]]
name = "r2"
type = "ram"
size = "4MiB"

[[bdev]]
name = "s0"
type = "striped"
children = ["r1", "r2"]
chunk = "64KiB"
"#;

const DEVICES: &str = r#"
[[scst]]
name = "d0"
bdev = "r0"

[[scst]]
name = "ds"
bdev = "s0"
"#;

fn names(bdevs: &[BdevConfig]) -> Vec<&str> {
    bdevs.iter().map(BdevConfig::name).collect()
}

#[test]
fn the_same_configuration_changes_nothing() {
    let c = config(RAM, DEVICES);
    let p = plan(&c, &c.clone()).unwrap();
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(p.summary(), "nothing changed");
}

#[test]
fn a_new_bdev_and_device_are_added_and_nothing_else_is_touched() {
    let old = config(RAM, DEVICES);
    let new = config(
        &format!("{RAM}\n[[bdev]]\nname = \"n0\"\ntype = \"null\"\nsize = \"8MiB\"\n"),
        &format!("{DEVICES}\n[[scst]]\nname = \"dn\"\nbdev = \"n0\"\n"),
    );
    let p = plan(&old, &new).unwrap();
    assert_eq!(names(&p.bdevs_added), ["n0"]);
    assert_eq!(p.scst_added.len(), 1);
    assert_eq!(p.scst_added[0].name, "dn");
    assert!(p.scst_removed.is_empty() && p.bdevs_removed.is_empty());
    assert!(!p.tcmu_changed);
}

#[test]
fn a_changed_child_rebuilds_the_striped_bdev_and_its_device_only() {
    let old = config(RAM, DEVICES);
    let new = config(
        &RAM.replacen(
            "name = \"r2\"\ntype = \"ram\"\nsize = \"4MiB\"",
            "name = \"r2\"\ntype = \"ram\"\nsize = \"8MiB\"",
            1,
        ),
        DEVICES,
    );
    let p = plan(&old, &new).unwrap();
    // The striped bdev goes before its child, comes back after it.
    assert_eq!(p.bdevs_removed, ["s0", "r2"]);
    assert_eq!(names(&p.bdevs_added), ["r2", "s0"]);
    assert_eq!(p.scst_removed, ["ds"]);
    assert_eq!(p.scst_added.len(), 1);
    assert_eq!(p.scst_added[0].name, "ds");
    assert!(
        p.summary().contains("SCST devices removed: ds"),
        "{}",
        p.summary()
    );
}

#[test]
fn a_removed_device_and_its_bdev_go_in_that_order() {
    let old = config(RAM, DEVICES);
    let new = config(
        &RAM.replacen(
            "[[bdev]]\nname = \"r0\"\ntype = \"ram\"\nsize = \"4MiB\"\n",
            "",
            1,
        ),
        "[[scst]]\nname = \"ds\"\nbdev = \"s0\"\n",
    );
    let p = plan(&old, &new).unwrap();
    assert_eq!(p.scst_removed, ["d0"]);
    assert_eq!(p.bdevs_removed, ["r0"]);
    assert!(p.bdevs_added.is_empty() && p.scst_added.is_empty());
}

#[test]
fn a_changed_device_definition_re_registers_that_device() {
    let old = config(RAM, DEVICES);
    let new = config(
        RAM,
        "[[scst]]\nname = \"d0\"\nbdev = \"r0\"\npool_mb = 32\n\n[[scst]]\nname = \"ds\"\nbdev = \"s0\"\n",
    );
    let p = plan(&old, &new).unwrap();
    assert_eq!(p.scst_removed, ["d0"]);
    assert_eq!(p.scst_added.len(), 1);
    assert!(p.bdevs_removed.is_empty() && p.bdevs_added.is_empty());
}

#[test]
fn reactors_cannot_change_and_tcmu_changes_are_noted() {
    let old = config(RAM, DEVICES);
    let mut new = old.clone();
    new.reactors.cores.push(1);
    assert_eq!(plan(&old, &new), Err(ReloadError::Reactors));
    let mut new = old.clone();
    new.tcmu.rescan_interval_ms += 1;
    let p = plan(&old, &new).unwrap();
    assert!(p.tcmu_changed);
    assert!(p.summary().contains("[tcmu] changed"));
}
