package main

import "errors"

func execIn(args []string) (int, error) { return 2, errors.New("not yet") }
