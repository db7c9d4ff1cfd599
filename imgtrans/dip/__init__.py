"""Deep Image Prior: restore one image by fitting a random network to it (`dip`), and hand its estimate to a
trained diffusion model (`dip_diffusion`) — configs and stage plan, networks, image handling, the two runs."""
