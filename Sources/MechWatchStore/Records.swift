import MechWatchCore

/// Whether a reference is still learning or already scoring.
public enum ReferenceState: String, Sendable, Codable {
    /// Accepting fit traces; not yet able to score.
    case collecting
    /// Finalized: estimated, calibrated, scoring.
    case active
}

/// A stored reference's description (not its fitted statistics).
public struct ReferenceRecord: Sendable, Equatable {
    public var id: Int64
    public var name: String
    public var state: ReferenceState
    public var alpha: Double
    public var calibrationFraction: Double
    public var layout: SiteLayout
    public var createdAt: String
    public var finalizedAt: String?
    public var fitCount: Int
    public var calibrationCount: Int
    /// The statistic whose p-value flags.
    public var scorer: Scorer

    public init(id: Int64, name: String, state: ReferenceState, alpha: Double, calibrationFraction: Double, layout: SiteLayout,
                createdAt: String, finalizedAt: String? = nil, fitCount: Int = 0, calibrationCount: Int = 0, scorer: Scorer = .mechanism) {
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
public struct EventRow: Sendable, Equatable, Codable {
    public var event: Int64
    public var reference: String
    public var id: String
    public var time: String
    public var score: Double
    public var p: Double
    public var flagged: Bool
    public var output: Int?
    public var meta: String?
}

/// One event with its per-site terms, as shown by `event`.
public struct EventDetail: Sendable, Equatable {
    /// The per-site terms of the event, with the site's name and width.
    public struct Site: Sendable, Equatable {
        public var name: String
        public var width: Int
        public var score: SiteScore
    }

    /// One term of the surprise account with its calibrated tail probability.
    public struct Term: Sendable, Equatable {
        public var kind: TermLayout.Kind
        public var subject: String
        /// Nats; nil for an output term that fell back to the unconditional estimate.
        public var value: Double?
        public var p: Double
    }

    public var row: EventRow
    public var alpha: Double
    public var calibrationCount: Int
    public var sites: [Site]
    /// The scorer that decided the flag, and each scorer's p-value (absent for version-1 events).
    public var scorer: Scorer?
    public var pValues: [Scorer: Double]
    public var terms: [Term]
}

/// Event counts of one reference.
public struct EventCounts: Sendable, Equatable {
    public var events: Int
    public var flagged: Int

    public init(events: Int, flagged: Int) {
        self.events = events
        self.flagged = flagged
    }
}
