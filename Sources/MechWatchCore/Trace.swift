/// One forward pass of a monitored model: a vector per named site, in the reference's site order.
public struct Trace: Sendable, Equatable {
    /// The client's identifier for this trace (echoed in replies and stored with events).
    public var id: String
    /// The model's output label for this pass (e.g. the predicted class), when the client sends one.
    public var output: Int?
    /// One activation vector per site, ordered as the reference's `SiteLayout`.
    public var sites: [[Double]]

    /// Creates a trace whose `sites` are already in layout order.
    public init(id: String, output: Int? = nil, sites: [[Double]]) {
        self.id = id
        self.output = output
        self.sites = sites
    }
}

/// The named sites of a reference and their widths, in the order fixed by its first fit trace.
public struct SiteLayout: Sendable, Equatable, Codable {
    /// One site: its name (e.g. `blocks.3.mlp`) and vector width.
    public struct Site: Sendable, Equatable, Codable {
        public var name: String
        public var width: Int
        public init(name: String, width: Int) {
            self.name = name
            self.width = width
        }
    }

    public var sites: [Site]

    public init(_ sites: [Site]) { self.sites = sites }

    /// Sum of all site widths: the length of one flattened trace.
    public var totalWidth: Int { sites.reduce(0) { $0 + $1.width } }

    /// The position of the site called `name`, if the layout has one.
    public func index(of name: String) -> Int? { sites.firstIndex { $0.name == name } }
}
