//! What the supervisor needs to know about a service.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: &'static str,
    /// Services that must have reported ready before this one starts.
    pub depends_on: &'static [&'static str],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("service {service} depends on {missing}, which is not defined")]
    MissingDependency { service: String, missing: String },
    #[error("services form a dependency cycle through {0}")]
    Cycle(String),
}

/// Orders services so that each comes after everything it depends on; stable
/// for services that do not depend on each other.
pub fn start_order(specs: &[ServiceSpec]) -> Result<Vec<ServiceSpec>, SpecError> {
    for spec in specs {
        for dep in spec.depends_on {
            if !specs.iter().any(|s| s.name == *dep) {
                return Err(SpecError::MissingDependency {
                    service: spec.name.into(),
                    missing: (*dep).into(),
                });
            }
        }
    }
    let mut ordered: Vec<ServiceSpec> = Vec::new();
    while ordered.len() < specs.len() {
        let next = specs.iter().find(|s| {
            !ordered.contains(s)
                && s.depends_on
                    .iter()
                    .all(|d| ordered.iter().any(|o| o.name == *d))
        });
        match next {
            Some(spec) => ordered.push(spec.clone()),
            None => {
                let stuck = specs
                    .iter()
                    .find(|s| !ordered.contains(s))
                    .map(|s| s.name)
                    .unwrap_or("?");
                return Err(SpecError::Cycle(stuck.into()));
            }
        }
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &'static str, depends_on: &'static [&'static str]) -> ServiceSpec {
        ServiceSpec { name, depends_on }
    }

    #[test]
    fn dependencies_start_first() {
        let specs = [
            spec("agent", &["net"]),
            spec("net", &["devices"]),
            spec("power", &[]),
            spec("devices", &[]),
        ];
        let names: Vec<_> = start_order(&specs)
            .unwrap()
            .iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["power", "devices", "net", "agent"]);
    }

    #[test]
    fn missing_and_cyclic_dependencies_are_errors() {
        assert_eq!(
            start_order(&[spec("net", &["devices"])]),
            Err(SpecError::MissingDependency {
                service: "net".into(),
                missing: "devices".into()
            })
        );
        assert_eq!(
            start_order(&[spec("a", &["b"]), spec("b", &["a"])]),
            Err(SpecError::Cycle("a".into()))
        );
    }
}
