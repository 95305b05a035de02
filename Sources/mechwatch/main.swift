import MechWatchCLI

await MechWatchCommand.runFromCommandLine()
