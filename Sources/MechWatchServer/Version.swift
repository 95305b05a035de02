/// The version of this build.
package enum MechWatchVersion {
    package static let current = "0.2.0"
}
