// composecheck loads compose files with compose-go, the library docker compose itself loads
// them with: schema validation, interpolation, merging of override files, path resolution and
// the consistency checks (unknown dependencies, cycles, networks, volumes). It prints each
// service with what it waits for, or the error and exit code 1.
//
//	go run ./deploy/check/composecheck compose/docker-compose.yml [compose/docker-compose.gpu.yml]
package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: composecheck FILE...")
		os.Exit(2)
	}
	options, err := cli.NewProjectOptions(os.Args[1:], cli.WithOsEnv, cli.WithConsistency(true))
	if err != nil {
		fail(err)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	names := project.ServiceNames()
	sort.Strings(names)
	for _, name := range names {
		service := project.Services[name]
		var waits []string
		for dep, cfg := range service.DependsOn {
			waits = append(waits, dep+"="+cfg.Condition)
		}
		sort.Strings(waits)
		health := "image"
		if service.HealthCheck != nil {
			health = "compose"
			if service.HealthCheck.Disable {
				health = "disabled"
			}
		}
		fmt.Printf("%-18s image=%-26s health=%-8s waits=[%s]\n", name, service.Image, health,
			strings.Join(waits, " "))
	}
	fmt.Printf("%s: %d services, valid\n", strings.Join(os.Args[1:], " + "), len(names))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "composecheck:", err)
	os.Exit(1)
}
