"""Where works come from: API scroll windows (`windows`, planned by `plan`), Crossref XML files
(`xmlfiles`) and snapshot files (`snapshots`). Each hands batches of parsed works with their
position to the one commit path, `crawler.engine.Crawl.commit_page`."""
