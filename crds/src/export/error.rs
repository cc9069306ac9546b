//! Why a bundle cannot be exported as Kubernetes objects.

/// A bundle that has no faithful Kubernetes form. Each message names the file
/// or entry and how to change the bundle so it has one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// A YAML file of the bundle does not parse (a bundle that loaded always does).
    #[error("cannot read `{file}`: {reason}; check the bundle with `palisade policy validate`")]
    Yaml { file: &'static str, reason: String },

    /// A policy file whose stem is not a Kubernetes object name.
    #[error("policy file `{file}` cannot become a CedarPolicy: `{name}` is not a Kubernetes name (lower-case letters, digits, `-` and `.`); rename the file to `{suggestion}`")]
    PolicyName {
        file: String,
        name: String,
        suggestion: String,
    },

    /// Two policy files of one namespace with one stem.
    #[error("policy files `{first}` and `{second}` would both be CedarPolicy `{namespace}/{name}`; CedarPolicy names are unique per namespace; rename one of the files")]
    DuplicatePolicyName {
        namespace: String,
        name: String,
        first: String,
        second: String,
    },

    /// An empty policy file (a CedarPolicy needs some text).
    #[error("policy file `{file}` is empty; delete it or write a policy in it")]
    EmptyPolicy { file: String },

    /// A policy file larger than a CedarPolicy may hold.
    #[error("policy file `{file}` is over the limit of {limit} bytes of a CedarPolicy; split it into several files")]
    PolicyTooLarge { file: String, limit: usize },

    /// A label policies read that differs between workloads of one namespace.
    #[error("the workloads of namespace `{namespace}` do not all have the same `{key}` label, which a policy or an egress entry reads; in a cluster a label policies can trust comes from the Namespace, one value for all its workloads (a pod's own labels can be forged by whoever creates pods); give the workloads that differ a namespace of their own")]
    DisputedTag { namespace: String, key: String },

    /// An egress entry whose workloads are not in exactly one namespace.
    #[error("the egress entry for `{host}` selects workloads of {found}, but an EgressAllowlist selects workloads of its own namespace only; split it into one entry per namespace, each with `namespaces: [NS]`")]
    EgressNamespaces { host: String, found: String },

    /// An egress entry naming a SPIFFE ID outside its namespace.
    #[error("the egress entry for `{host}` names `{id}`, which is not of its namespace `{namespace}`; split it into one entry per namespace")]
    EgressForeignId {
        host: String,
        id: String,
        namespace: String,
    },

    /// An egress host an EgressAllowlist cannot hold.
    #[error("the egress host `{host}` cannot be an EgressAllowlist host, which is a lower-case DNS name of at least two labels or `*.` and one; write it that way in `egress.yaml`")]
    EgressHost { host: String },

    /// A service that is not served by exactly one identity of its namespace.
    #[error("service `{service}` is served by {found}; an exported Service selects the pods of one workload of its namespace, so give it exactly one `servedBy` of namespace `{namespace}`")]
    ServedBy {
        service: String,
        found: String,
        namespace: String,
    },

    /// The services of one workload list endpoints on different ports.
    #[error("the services served by `{workload}` list endpoints on ports {ports}, but its sidecar has one inbound port; give its endpoints one port")]
    InboundPorts { workload: String, ports: String },

    /// A name or label Kubernetes would refuse.
    #[error("{what} `{value}` is not valid in Kubernetes; {hint}")]
    Invalid {
        what: String,
        value: String,
        hint: &'static str,
    },

    /// A label the controller does not pass on to policies, so it would not
    /// come back from the cluster.
    #[error("{what} has label `{key}`, which the controller hides from policies (controller bookkeeping or `palisade.dev/*`); rename the label")]
    HiddenLabel { what: String, key: String },

    /// An object that cannot be rendered as YAML.
    #[error("cannot render {what} as YAML: {reason}; please report it")]
    Render { what: String, reason: String },
}
