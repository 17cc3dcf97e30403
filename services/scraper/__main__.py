from services.scraper.main import main

main()
