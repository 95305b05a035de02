/// The version of this build.
public enum MechWatchVersion {
    public static let current = "0.2.0"
}
