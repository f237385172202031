package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/agentvoicebox/avb/app"
	"github.com/agentvoicebox/avb/voice/tts"
)

// ttsWorkerCmd is one espeak-ng synthesis worker of `avb serve`
// (AVB_TTS_WORKERS): it reads requests on stdin and streams audio on
// stdout, until stdin closes.
func ttsWorkerCmd() *cobra.Command {
	return &cobra.Command{
		Use:    app.TTSWorkerCommand,
		Short:  "Synthesize speech for avb serve over stdin and stdout (started by avb serve)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			e, err := tts.NewEspeak()
			if err != nil {
				return err
			}
			e.Streaming = true // a worker does nothing else: each buffer leaves as it is made
			return tts.ServeWorker(os.Stdin, os.Stdout, e)
		},
	}
}
