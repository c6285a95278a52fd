//! Which hard IRQs belong to network devices.
//!
//! An IRQ is a network IRQ when it is one of the MSI/MSI-X vectors or the
//! legacy IRQ of the device (or its bus parent, as for virtio) behind a
//! network interface in /sys/class/net, or when its handler name in
//! /proc/interrupts starts with an interface or device name ("eth0-rx-0",
//! "virtio2-input.0").

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// IRQ numbers of network devices on this machine, best effort: unreadable
/// entries are skipped (an IRQ not found is counted as "other IRQ").
pub fn network_irqs() -> BTreeSet<u32> {
    let mut irqs = BTreeSet::new();
    let mut names = Vec::new();
    let Ok(entries) = fs::read_dir("/sys/class/net") else {
        return irqs;
    };
    for entry in entries.flatten() {
        names.push(entry.file_name().to_string_lossy().into_owned());
        let Ok(device) = fs::canonicalize(entry.path().join("device")) else {
            continue; // virtual interface: no IRQ
        };
        if let Some(dev) = device.file_name() {
            names.push(dev.to_string_lossy().into_owned());
        }
        // The device itself, or the bus device it sits on (virtioN -> PCI).
        for dir in [device.as_path(), device.parent().unwrap_or(&device)] {
            irqs.extend(device_irqs(dir));
        }
    }
    if let Ok(text) = fs::read_to_string("/proc/interrupts") {
        irqs.extend(irqs_named(&text, &names));
    }
    irqs
}

fn device_irqs(dir: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(msi) = fs::read_dir(dir.join("msi_irqs")) {
        out.extend(
            msi.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()),
        );
    }
    if let Ok(irq) = fs::read_to_string(dir.join("irq")) {
        out.extend(irq.trim().parse::<u32>().ok().filter(|&n| n != 0));
    }
    out
}

/// IRQs in /proc/interrupts text whose handler names start with one of
/// `names` followed by a separator or the end ("eth0", "eth0-TxRx-0",
/// "virtio2-input.0"; not "eth01").
pub fn irqs_named(proc_interrupts: &str, names: &[String]) -> Vec<u32> {
    let mut out = Vec::new();
    for line in proc_interrupts.lines() {
        let Some((num, rest)) = line.trim_start().split_once(':') else {
            continue;
        };
        let Ok(irq) = num.parse::<u32>() else {
            continue; // NMI:, LOC:, ... are not device IRQs
        };
        // The handler names are the last field; several handlers sharing an
        // IRQ are separated by ", ".
        let handlers = rest.split_whitespace().last().unwrap_or("");
        let is_net = rest
            .split(", ")
            .map(|h| h.split_whitespace().last().unwrap_or(""))
            .chain(std::iter::once(handlers))
            .any(|h| names.iter().any(|n| handler_of(h, n)));
        if is_net {
            out.push(irq);
        }
    }
    out
}

fn handler_of(handler: &str, name: &str) -> bool {
    !name.is_empty()
        && handler
            .strip_prefix(name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '.', '_', '@', ':']))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERRUPTS: &str = "           CPU0       CPU1
 26:          0         13  IO-APIC   4-edge      ttyS0
 38:          0       2533 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0
 39:       1506          0 PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0
 41:       4158          0 PCI-MSIX-0000:00:04.0   1-edge      virtio3-rx
 50:          3          0 PCI-MSI 524288-edge      eth0-TxRx-0
 51:          3          0 PCI-MSI 524289-edge      eth01
 52:          1          0 IO-APIC   9-fasteoi   acpi, eth1
LOC:    3536919    2852013   Local timer interrupts
";

    #[test]
    fn handlers_named_after_interfaces_or_devices() {
        let names = vec![
            "eth0".to_string(),
            "virtio2".to_string(),
            "eth1".to_string(),
        ];
        assert_eq!(irqs_named(INTERRUPTS, &names), vec![38, 39, 50, 52]);
    }

    #[test]
    fn no_names_no_irqs() {
        assert!(irqs_named(INTERRUPTS, &[]).is_empty());
        assert!(irqs_named(INTERRUPTS, &[String::new()]).is_empty());
    }
}
