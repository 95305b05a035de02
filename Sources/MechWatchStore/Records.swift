import MechWatchCore

/// Whether a reference is still learning or already scoring.
package enum ReferenceState: String, Sendable, Codable {
    /// Accepting fit traces; not yet able to score.
    case collecting
    /// Finalized: estimated, calibrated, scoring.
    case active
}

/// A stored reference's description (not its fitted statistics).
package struct ReferenceRecord: Sendable, Equatable {
    package var id: Int64
    package var name: String
    package var state: ReferenceState
    package var alpha: Double
    package var calibrationFraction: Double
    package var layout: SiteLayout
    package var createdAt: String
    package var finalizedAt: String?
    package var fitCount: Int
    package var calibrationCount: Int
    /// The statistic whose p-value flags.
    package var scorer: Scorer
    /// `subspace`: some sites are modelled in principal subspaces (while collecting: only the moments those
    /// need are kept); `full`: none.
    package var model: SubspacePolicy.Mode

    package init(id: Int64, name: String, state: ReferenceState, alpha: Double, calibrationFraction: Double, layout: SiteLayout,
                createdAt: String, finalizedAt: String? = nil, fitCount: Int = 0, calibrationCount: Int = 0, scorer: Scorer = .mechanism,
                model: SubspacePolicy.Mode = .full) {
        self.model = model
        self.id = id
        self.name = name
        self.state = state
        self.alpha = alpha
        self.calibrationFraction = calibrationFraction
        self.layout = layout
        self.createdAt = createdAt
        self.finalizedAt = finalizedAt
        self.fitCount = fitCount
        self.calibrationCount = calibrationCount
        self.scorer = scorer
    }
}

/// One stored event as listed by `flags`.
package struct EventRow: Sendable, Equatable, Codable {
    package var event: Int64
    package var reference: String
    package var id: String
    package var time: String
    package var score: Double
    package var p: Double
    package var flagged: Bool
    package var output: Int?
    package var meta: String?
}

/// One event with its per-site terms, as shown by `event`.
package struct EventDetail: Sendable, Equatable {
    /// The per-site terms of the event, with the site's name and width.
    package struct Site: Sendable, Equatable {
        package var name: String
        package var width: Int
        package var score: SiteScore
    }

    /// One term of the surprise account with its calibrated tail probability.
    package struct Term: Sendable, Equatable {
        package var kind: TermLayout.Kind
        package var subject: String
        /// Nats; nil for an output term that fell back to the unconditional estimate.
        package var value: Double?
        package var p: Double
    }

    package var row: EventRow
    package var alpha: Double
    package var calibrationCount: Int
    package var sites: [Site]
    /// The scorer that decided the flag, and each scorer's p-value (absent for version-1 events).
    package var scorer: Scorer?
    package var pValues: [Scorer: Double]
    package var terms: [Term]
}

/// Event counts of one reference.
package struct EventCounts: Sendable, Equatable {
    package var events: Int
    package var flagged: Int

    package init(events: Int, flagged: Int) {
        self.events = events
        self.flagged = flagged
    }
}
