/// One forward pass of a monitored model: a vector per named site, in the reference's site order.
package struct Trace: Sendable, Equatable {
    /// The client's identifier for this trace (echoed in replies and stored with events).
    package var id: String
    /// The model's output label for this pass (e.g. the predicted class), when the client sends one.
    package var output: Int?
    /// One activation vector per site, ordered as the reference's `SiteLayout`.
    package var sites: [[Double]]

    /// Creates a trace whose `sites` are already in layout order.
    package init(id: String, output: Int? = nil, sites: [[Double]]) {
        self.id = id
        self.output = output
        self.sites = sites
    }
}

/// The named sites of a reference and their widths, in the order fixed by its first fit trace.
package struct SiteLayout: Sendable, Equatable, Codable {
    /// One site: its name (e.g. `blocks.3.mlp`) and vector width.
    package struct Site: Sendable, Equatable, Codable {
        package var name: String
        package var width: Int
        package init(name: String, width: Int) {
            self.name = name
            self.width = width
        }
    }

    package var sites: [Site]

    package init(_ sites: [Site]) { self.sites = sites }

    /// Sum of all site widths: the length of one flattened trace.
    package var totalWidth: Int { sites.reduce(0) { $0 + $1.width } }

    /// The position of the site called `name`, if the layout has one.
    package func index(of name: String) -> Int? { sites.firstIndex { $0.name == name } }
}
