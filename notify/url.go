package notify

import (
	"errors"
	"net/url"
)

// CheckCallbackURL returns why u cannot be a batch's callback URL, or nil:
// it must be an absolute http:// or https:// URL with a host.
func CheckCallbackURL(u string) error {
	p, err := url.Parse(u)
	switch {
	case err != nil:
		return errors.New("not a URL")
	case p.Scheme != "http" && p.Scheme != "https":
		return errors.New("must be an http:// or https:// URL")
	case p.Host == "":
		return errors.New("has no host")
	}
	return nil
}
