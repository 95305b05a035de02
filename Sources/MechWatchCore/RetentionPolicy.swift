/// How long events are kept: unflagged ones `days`, flagged ones `flaggedDays` (0: for good), and at most
/// `maximumEvents` per reference (0: no cap; the oldest go first).
package struct RetentionPolicy: Sendable, Equatable {
    package var days: Int
    package var flaggedDays: Int
    package var maximumEvents: Int

    package init(days: Int = 0, flaggedDays: Int = 0, maximumEvents: Int = 0) {
        self.days = days
        self.flaggedDays = flaggedDays
        self.maximumEvents = maximumEvents
    }

    /// Whether the policy deletes anything at all.
    package var isActive: Bool { days > 0 || flaggedDays > 0 || maximumEvents > 0 }

    /// A reference's own settings, each replacing the daemon's where given (0: keep for good, no cap).
    package struct Overrides: Sendable, Equatable {
        package var days: Int?
        package var flaggedDays: Int?
        package var maximumEvents: Int?

        package init(days: Int? = nil, flaggedDays: Int? = nil, maximumEvents: Int? = nil) {
            self.days = days
            self.flaggedDays = flaggedDays
            self.maximumEvents = maximumEvents
        }

        /// None: the daemon's settings apply.
        package static let none = Overrides()
    }

    /// This policy with a reference's overrides applied.
    package func overridden(by o: Overrides) -> RetentionPolicy {
        RetentionPolicy(days: o.days ?? days, flaggedDays: o.flaggedDays ?? flaggedDays, maximumEvents: o.maximumEvents ?? maximumEvents)
    }
}

